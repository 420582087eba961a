//! `application/x-www-form-urlencoded` decoding, for the in-process servers' query strings.

/// Decodes `+` as a space and `%XX` as its byte; a `%` not followed by two hex digits stays as
/// it is. Invalid UTF-8 is replaced, never an error.
pub(crate) fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_plus_percent_and_leaves_broken_escapes() {
        assert_eq!(decode("a+b%2Fc"), "a b/c");
        assert_eq!(decode("%41"), "A");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%4"), "%4");
        // Not an escape: the % stays, and the + is a space as everywhere else.
        assert_eq!(decode("%+1x"), "% 1x");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%E2%9C%93"), "\u{2713}");
    }
}
