//! Optional HTTP basic authentication (RFC 7617) for the stats page.

use hyper::header::HeaderValue;

/// The one accepted `user:password`, kept as the base64 token a browser sends.
pub(super) struct BasicAuth {
    token: Vec<u8>,
}

impl BasicAuth {
    /// `None` unless both a user and a password are configured.
    pub(super) fn new(user: Option<&str>, password: Option<&str>) -> Option<Self> {
        let (user, password) = (user?, password?);
        let token = base64_encode(format!("{user}:{password}").as_bytes());
        Some(BasicAuth {
            token: token.into_bytes(),
        })
    }

    /// True when `header` is `Basic <token>` with the configured credentials. The token is
    /// compared in time independent of where it differs.
    pub(super) fn allows(&self, header: Option<&HeaderValue>) -> bool {
        let Some(value) = header else { return false };
        let value = value.as_bytes();
        let Some(space) = value.iter().position(|&b| b == b' ') else {
            return false;
        };
        let (scheme, rest) = value.split_at(space);
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return false;
        }
        let given = trim_ascii(rest);
        constant_time_eq(given, &self.token)
    }
}

fn trim_ascii(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// Compares every byte of the longer input, so the time taken does not reveal the position
/// of the first difference (the length of the expected token is not a secret worth hiding:
/// it follows from the password length only to within 3 bytes and is fixed).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Standard base64 with padding (RFC 4648 section 4).
fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn accepts_only_the_configured_credentials() {
        // RFC 7617 section 2's example: Aladdin / open sesame.
        let auth = BasicAuth::new(Some("Aladdin"), Some("open sesame")).unwrap();
        let ok = HeaderValue::from_static("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(auth.allows(Some(&ok)));
        let lower = HeaderValue::from_static("basic   QWxhZGRpbjpvcGVuIHNlc2FtZQ== ");
        assert!(auth.allows(Some(&lower)));
        for bad in [
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZR==",
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ",
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==AA",
            "Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
            "Basic",
            "",
        ] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert!(!auth.allows(Some(&v)), "{bad:?} accepted");
        }
        assert!(!auth.allows(None));
    }

    #[test]
    fn auth_needs_both_user_and_password() {
        assert!(BasicAuth::new(Some("u"), None).is_none());
        assert!(BasicAuth::new(None, Some("p")).is_none());
        assert!(BasicAuth::new(None, None).is_none());
    }
}
