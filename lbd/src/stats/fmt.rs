//! Small text helpers shared by the renderers.

use std::fmt::Write as _;

/// Escapes text for HTML element content and double- or single-quoted attributes.
pub(super) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `93784` → `1d2h3m`; `75` → `1m15s`; `0` → `0s`. Two largest units only.
pub(super) fn duration(secs: u64) -> String {
    // (suffix, unit size, how many of the unit make the next larger one)
    const UNITS: [(&str, u64, u64); 4] = [
        ("d", 86_400, u64::MAX),
        ("h", 3_600, 24),
        ("m", 60, 60),
        ("s", 1, 60),
    ];
    let Some(first) = UNITS.iter().position(|&(_, size, _)| secs >= size) else {
        return "0s".to_owned();
    };
    let mut out = String::new();
    for &(suffix, size, wrap) in UNITS.iter().skip(first).take(2) {
        let _ = write!(out, "{}{suffix}", (secs / size) % wrap);
    }
    out
}

/// Byte counts in binary units with three significant digits: `1536` → `1.50 KiB`.
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    let digits = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    format!("{v:.digits$} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_markup_character() {
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(html_escape("plain ü"), "plain ü");
    }

    #[test]
    fn durations_show_the_two_largest_units() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(75), "1m15s");
        assert_eq!(duration(3600), "1h0m");
        assert_eq!(duration(93_784), "1d2h");
        assert_eq!(duration(86_400 + 5), "1d0h");
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(10 * 1024 * 1024), "10.0 MiB");
        assert_eq!(bytes(300 * 1024 * 1024 * 1024), "300 GiB");
    }
}
