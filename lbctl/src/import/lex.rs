//! Lexing: one line of keepalived.conf or haproxy.cfg into words.

/// Longest input considered (bytes); more is noted and ignored.
pub(super) const MAX_INPUT: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Word(String),
    Open,
    Close,
}

/// Split one line into words: `"..."`/`'...'` quote, `\` escapes one character, a comment
/// character starts a comment (at the start of a word; anywhere for HAProxy), and with
/// `braces` an unquoted `{` or `}` is a token of its own.
pub(super) fn tokenize(
    line: &str,
    comment: &[char],
    comment_anywhere: bool,
    braces: bool,
) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            } else if c == '\\' && q == '"' {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        if c.is_whitespace() {
            if in_word {
                out.push(Tok::Word(std::mem::take(&mut cur)));
                in_word = false;
            }
        } else if comment.contains(&c) && (comment_anywhere || !in_word) {
            break;
        } else if braces && (c == '{' || c == '}') {
            if in_word {
                out.push(Tok::Word(std::mem::take(&mut cur)));
                in_word = false;
            }
            out.push(if c == '{' { Tok::Open } else { Tok::Close });
        } else if c == '"' || c == '\'' {
            quote = Some(c);
            in_word = true;
        } else if c == '\\' {
            if let Some(n) = chars.next() {
                cur.push(n);
            }
            in_word = true;
        } else {
            cur.push(c);
            in_word = true;
        }
    }
    if in_word {
        out.push(Tok::Word(cur));
    }
    out
}

pub(super) fn capped(text: &str) -> (&str, bool) {
    if text.len() <= MAX_INPUT {
        return (text, false);
    }
    let mut end = MAX_INPUT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}
