//! Escapes that are not characters (source-api.md quirk 11): a lone UTF-16 surrogate such as `\ud800`,
//! which JSON's syntax allows but no string can hold. The feed reader also writes each byte of a record
//! that is not UTF-8 as such an escape (`\udcXX` for the byte `XX`, as Python's `surrogateescape` does), so
//! that the stored record is text and the operator still sees which bytes were there. A record holding
//! one is held back as `invalid_text`; it never fails the page or the array it came in.

/// Finds the escapes of `raw` (one JSON value's text) that are not characters. `None` when there are
/// none; otherwise the text with each replaced by `\ufffd` (so that the rest of the record can still be
/// read for its identifiers) and how many there were.
pub fn lone_surrogates(raw: &[u8]) -> Option<(Vec<u8>, usize)> {
    // Fast path: without `\ud`/`\uD` there is no surrogate escape at all. Records have few backslashes,
    // and memchr finds them with SIMD: scanning every three-byte window of the record twice was a fifth of
    // normalization's instructions.
    let surrogate_like = memchr::memchr_iter(b'\\', raw)
        .any(|at| raw.get(at + 1) == Some(&b'u') && matches!(raw.get(at + 2), Some(b'd' | b'D')));
    if !surrogate_like {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut lone = 0;
    let mut in_string = false;
    let mut index = 0;
    while index < raw.len() {
        let byte = raw[index];
        if !in_string {
            in_string = byte == b'"';
            out.push(byte);
            index += 1;
            continue;
        }
        match byte {
            b'"' => {
                in_string = false;
                out.push(byte);
                index += 1;
            }
            b'\\' => match hex_escape(raw, index) {
                Some(high @ 0xD800..=0xDBFF) => match hex_escape(raw, index + 6) {
                    Some(0xDC00..=0xDFFF) => {
                        let _ = high;
                        out.extend_from_slice(&raw[index..index + 12]);
                        index += 12;
                    }
                    _ => {
                        lone += 1;
                        out.extend_from_slice(b"\\ufffd");
                        index += 6;
                    }
                },
                Some(0xDC00..=0xDFFF) => {
                    lone += 1;
                    out.extend_from_slice(b"\\ufffd");
                    index += 6;
                }
                Some(_) => {
                    out.extend_from_slice(&raw[index..index + 6]);
                    index += 6;
                }
                None => {
                    // Any other escape is two bytes (`\"`, `\\`, `\n`, ...); a broken one is left for the
                    // parser to report.
                    let end = (index + 2).min(raw.len());
                    out.extend_from_slice(&raw[index..end]);
                    index = end;
                }
            },
            _ => {
                out.push(byte);
                index += 1;
            }
        }
    }
    (lone > 0).then_some((out, lone))
}

/// The code unit of a `\uXXXX` escape starting at `at`, if there is one.
fn hex_escape(raw: &[u8], at: usize) -> Option<u32> {
    let escape = raw.get(at..at + 6)?;
    if escape[0] != b'\\' || escape[1] != b'u' {
        return None;
    }
    let hex = std::str::from_utf8(&escape[2..]).ok()?;
    u32::from_str_radix(hex, 16).ok()
}

/// Writes each byte of `bytes` that is not part of valid UTF-8 as the escape `\udcXX`; `None` when the
/// bytes are valid UTF-8 already. Inside a JSON string the result is a lone-surrogate escape (held back
/// as `invalid_text`); outside one it is a syntax error, as the stray byte was.
pub fn escape_invalid_utf8(bytes: &[u8]) -> Option<Vec<u8>> {
    if simdutf8::basic::from_utf8(bytes).is_ok() {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() + 64);
    escape_invalid_utf8_into(bytes, true, &mut out);
    Some(out)
}

/// Appends `bytes` to `out` escaped as [`escape_invalid_utf8`] does, for input read in pieces: a character
/// cut off at the end of `bytes` is left unread (its other bytes may come with the next piece) unless
/// `at_end`, when its bytes are escaped. Returns how many bytes of `bytes` were read.
pub fn escape_invalid_utf8_into(bytes: &[u8], at_end: bool, out: &mut Vec<u8>) -> usize {
    let mut rest = bytes;
    loop {
        let error = match simdutf8::compat::from_utf8(rest) {
            Ok(_) => {
                out.extend_from_slice(rest);
                return bytes.len();
            }
            Err(error) => error,
        };
        let valid = error.valid_up_to();
        out.extend_from_slice(&rest[..valid]);
        let invalid = match error.error_len() {
            Some(length) => length,
            None if at_end => rest.len() - valid,
            None => return bytes.len() - (rest.len() - valid),
        };
        for byte in &rest[valid..valid + invalid] {
            out.extend_from_slice(format!("\\udc{byte:02x}").as_bytes());
        }
        rest = &rest[valid + invalid..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lone_surrogates_and_keeps_pairs() {
        assert!(lone_surrogates(br#"{"a":"x\u00e9"}"#).is_none());
        assert!(lone_surrogates(br#"{"a":"\ud83d\ude00"}"#).is_none());
        let (fixed, count) = lone_surrogates(br#"{"a":"x\ud800y","b":"\udcff"}"#).unwrap();
        assert_eq!(count, 2);
        assert_eq!(fixed, br#"{"a":"x\ufffdy","b":"\ufffd"}"#);
        // An escaped backslash before `ud800` is text, not an escape.
        assert!(lone_surrogates(br#"{"a":"\\ud800"}"#).is_none());
        // A lead surrogate at the very end of a string.
        assert_eq!(lone_surrogates(br#"["\uD800"]"#).unwrap().1, 1);
    }

    #[test]
    fn invalid_bytes_become_surrogate_escapes() {
        assert!(escape_invalid_utf8("Nguyễn".as_bytes()).is_none());
        let escaped = escape_invalid_utf8(b"{\"s\":\"a\xffb\xc3\"}").unwrap();
        assert_eq!(escaped, br#"{"s":"a\udcffb\udcc3"}"#);
        let (_, count) = lone_surrogates(&escaped).unwrap();
        assert_eq!(count, 2);
        let _: serde_json::Value = serde_json::from_slice(&lone_surrogates(&escaped).unwrap().0)
            .expect("after the replacement the record parses");
    }

    #[test]
    fn escaping_in_pieces_gives_what_escaping_the_whole_gives() {
        // An invalid byte, a character cut at every point, and one cut off at the very end.
        let mut bytes = "{\"s\":\"Nguyễn".as_bytes().to_vec();
        bytes.extend_from_slice(b"\xff\"}\xe1\xbb");
        let whole = escape_invalid_utf8(&bytes).unwrap();
        assert!(whole.ends_with(br#"\udcff"}\udce1\udcbb"#));
        for split in 0..=bytes.len() {
            let mut out = Vec::new();
            let used = escape_invalid_utf8_into(&bytes[..split], false, &mut out);
            let mut rest = bytes[used..split].to_vec();
            rest.extend_from_slice(&bytes[split..]);
            escape_invalid_utf8_into(&rest, true, &mut out);
            assert_eq!(out, whole, "split at {split}");
        }
    }
}
