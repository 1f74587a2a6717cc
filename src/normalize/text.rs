//! The text rule of mapping.md: legacy TCVN3 (ABC) detection and decoding, NFC, control and invisible
//! characters, white space, length limits, and what is still invalid after all that.

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

use super::syllable::is_syllable;

/// Portal length limits, in characters (portal-api.md section 3 and 2.2).
pub const LIMIT_PROCEDURE_NAME: usize = 500;
pub const LIMIT_APPLICANT_NAME: usize = 200;
pub const LIMIT_SUMMARY: usize = 1000;
pub const LIMIT_ACTOR: usize = 50;
pub const LIMIT_PROGRESS_CONTENT: usize = 1000;

/// A text value after the text rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanText {
    /// NFC, no control or invisible characters, white space folded, within the limit.
    pub text: String,
    /// The value was TCVN3 read as Latin-1 and has been decoded (`tcvn3_converted`).
    pub converted: bool,
    /// The value was longer than its limit and has been cut (`text_truncated`).
    pub truncated: bool,
    /// The value still holds replacement characters or non-characters (`invalid_text`).
    pub invalid: bool,
}

/// Applies the text rule to one value; `limit` is the portal's limit in characters, if it has one.
pub fn clean(raw: &str, limit: Option<usize>) -> CleanText {
    // Most values are already clean. One pass over them tells so, and such a value is copied as it is:
    // every step below would leave it unchanged. A value that is all Latin-1 with a letter code (`Lê Thu
    // Hà`) is clean too, unless TCVN3 detection decodes it.
    match first_look(raw, limit) {
        FirstLook::Clean => unchanged(raw),
        FirstLook::CleanUnlessTcvn3 => match decode_latin1_if_tcvn3(raw) {
            None => unchanged(raw),
            Some(decoded) => clean_decoded(Cow::Owned(decoded), true, limit),
        },
        FirstLook::InDoubt => clean_steps(raw, limit),
    }
}

fn unchanged(raw: &str) -> CleanText {
    CleanText {
        text: raw.to_owned(),
        converted: false,
        truncated: false,
        invalid: false,
    }
}

/// The text rule step by step (mapping.md, Text), for values that [`first_look`] does not vouch for.
fn clean_steps(raw: &str, limit: Option<usize>) -> CleanText {
    match decode_if_tcvn3(raw) {
        Some(decoded) => clean_decoded(Cow::Owned(decoded), true, limit),
        None => clean_decoded(Cow::Borrowed(raw), false, limit),
    }
}

/// The steps after TCVN3 detection (`converted` says whether it decoded the value).
fn clean_decoded(decoded: Cow<'_, str>, converted: bool, limit: Option<usize>) -> CleanText {
    // Most values are already clean: copying them whole is much cheaper than rebuilding them character
    // by character.
    let mut text = if needs_stripping(&decoded) {
        strip_and_fold(&decoded)
    } else {
        decoded.into_owned()
    };
    // NFC comes after stripping as well as conceptually before it: removing an invisible character that
    // sat between a letter and a combining mark leaves a sequence that only NFC composes.
    if !surely_nfc(&text) && is_nfc_quick(text.chars()) != IsNormalized::Yes {
        text = text.nfc().collect();
    }
    let mut truncated = false;
    if let Some(limit) = limit {
        // A string of at most `limit` bytes has at most `limit` characters: no need to count.
        if text.len() > limit
            && let Some((cut, _)) = text.char_indices().nth(limit)
        {
            text.truncate(cut);
            let kept = text.trim_end().len();
            text.truncate(kept);
            truncated = true;
        }
    }
    let invalid = !text.is_ascii() && text.chars().any(is_invalid_char);
    CleanText {
        text,
        converted,
        truncated,
        invalid,
    }
}

/// What one pass over a value tells of it, before the text rule's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstLook {
    /// No step of the rule would change or flag it.
    Clean,
    /// It is all Latin-1 with a TCVN3 letter code, and no other step would change or flag it: clean
    /// unless TCVN3 detection decodes it.
    CleanUnlessTcvn3,
    /// Some step may change or flag it: the full rule decides.
    InDoubt,
}

/// Looks at `raw` once. Clean means: nothing to strip or fold, surely NFC (as [`surely_nfc`] judges it),
/// within `limit` in bytes (so within it in characters), no invalid character, and no TCVN3 letter code
/// in text that is all Latin-1 (the only text TCVN3 detection looks at; with one, it is
/// [`FirstLook::CleanUnlessTcvn3`]). The checks are those of the steps themselves
/// ([`decode_if_tcvn3`], [`needs_stripping`], [`surely_nfc`], [`is_invalid_char`]), made in one pass;
/// anything in doubt takes the full path.
fn first_look(raw: &str, limit: Option<usize>) -> FirstLook {
    let bytes = raw.as_bytes();
    if limit.is_some_and(|limit| bytes.len() > limit)
        || bytes.first() == Some(&b' ')
        || bytes.last() == Some(&b' ')
    {
        return FirstLook::InDoubt;
    }
    // Byte by byte rather than character by character: the lead byte of a UTF-8 sequence tells its block
    // (C2–C3 Latin-1, C4–CB up to U+02FF, E1 B8–BB Latin Extended Additional), so only Latin-1 characters
    // are decoded. `raw` is valid UTF-8, so the continuation bytes are there; `get` keeps it panic-free.
    let mut previous_space = false;
    let mut all_latin1 = true;
    let mut letter_code = false;
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b' ' => {
                if previous_space {
                    return FirstLook::InDoubt;
                }
                previous_space = true;
                index += 1;
                continue;
            }
            0x21..=0x7E => index += 1,
            // Latin-1 letters: TCVN3 letter codes when the whole value is Latin-1.
            0xC2 | 0xC3 => {
                let Some(&continuation) = bytes.get(index + 1) else {
                    return FirstLook::InDoubt;
                };
                let character = char::from(((byte & 0x03) << 6) | (continuation & 0x3F));
                if character == '\u{AD}' || character.is_whitespace() || character.is_control() {
                    return FirstLook::InDoubt;
                }
                letter_code |= tcvn3_letter(character).is_some();
                index += 2;
            }
            // Latin Extended-A and -B (`ơ`, `ư`, `đ`) below the combining marks (U+0100–U+02FF), and the
            // precomposed letters of Latin Extended Additional (U+1E00–U+1EFF): starters NFC leaves
            // alone, nothing to strip.
            0xC4..=0xCB => {
                all_latin1 = false;
                index += 2;
            }
            0xE1 if matches!(bytes.get(index + 1), Some(0xB8..=0xBB)) => {
                all_latin1 = false;
                index += 3;
            }
            // ASCII controls, and everything else.
            _ => return FirstLook::InDoubt,
        }
        previous_space = false;
    }
    if all_latin1 && letter_code {
        FirstLook::CleanUnlessTcvn3
    } else {
        FirstLook::Clean
    }
}

/// Characters that mean the text was damaged before it reached us: the replacement character and the
/// 66 noncharacters (U+FDD0–U+FDEF, and the last two code points of every plane, U+FFFE/U+FFFF to
/// U+10FFFE/U+10FFFF).
fn is_invalid_char(character: char) -> bool {
    let code = u32::from(character);
    character == '\u{FFFD}' || (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE
}

/// Zero-width and other invisible characters that mapping.md removes (after TCVN3 decoding, so that
/// TCVN3's `ư`, U+00AD, is decoded before the soft hyphen would be removed).
fn is_invisible(character: char) -> bool {
    matches!(
        character,
        '\u{00AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}'
    )
}

/// A cheap NFC test that covers Vietnamese: every character below U+0300 (ASCII, Latin-1, Latin
/// Extended-A and -B with `ơ`/`ư`, spacing modifiers) and every precomposed letter of Latin Extended
/// Additional (U+1E00–U+1EFF, the toned Vietnamese vowels) is a starter that NFC leaves as it is. Only
/// text with other characters goes through the full quick check.
fn surely_nfc(text: &str) -> bool {
    text.is_ascii()
        || text.chars().all(|character| {
            character < '\u{300}' || ('\u{1E00}'..='\u{1EFF}').contains(&character)
        })
}

/// True when steps 3 and 4 would change `text`: a control, invisible or non-space white-space character,
/// a space at either end, or two spaces in a row.
fn needs_stripping(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.first() == Some(&b' ') || bytes.last() == Some(&b' ') || text.contains("  ") {
        return true;
    }
    // Codes, ids and links are ASCII: a byte test is enough for them.
    if text.is_ascii() {
        return text.bytes().any(|byte| byte.is_ascii_control());
    }
    text.chars().any(|character| match character {
        ' ' => false,
        '\0'..='\u{7F}' => character.is_ascii_control(),
        // Letters of Latin-1 and the Vietnamese blocks, checked without the Unicode tables: the only
        // special character among them is the soft hyphen.
        '\u{A1}'..='\u{167F}' | '\u{1E00}'..='\u{1EFF}' => character == '\u{AD}',
        _ => character.is_whitespace() || character.is_control() || is_invisible(character),
    })
}

/// Steps 3 and 4: control characters out (tab, newline and carriage return become a space), invisible
/// characters out, runs of white space folded to one space, trimmed.
fn strip_and_fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for character in text.chars() {
        if character.is_whitespace() {
            pending_space = true;
        } else if character.is_control() || is_invisible(character) {
            continue;
        } else {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(character);
        }
    }
    out
}

/// TCVN3 (ABC, TCVN 5712:1993 VN3) letter codes read as Latin-1, to the Unicode letter they stand for.
/// The codes TCVN3 leaves to other uses (e.g. U+00E0 `à`) are not letters here and stay as they are.
pub fn tcvn3_letter(character: char) -> Option<char> {
    let decoded = match character {
        '\u{A1}' => 'Ă',
        '\u{A2}' => 'Â',
        '\u{A3}' => 'Ê',
        '\u{A4}' => 'Ô',
        '\u{A5}' => 'Ơ',
        '\u{A6}' => 'Ư',
        '\u{A7}' => 'Đ',
        '\u{A8}' => 'ă',
        '\u{A9}' => 'â',
        '\u{AA}' => 'ê',
        '\u{AB}' => 'ô',
        '\u{AC}' => 'ơ',
        '\u{AD}' => 'ư',
        '\u{AE}' => 'đ',
        '\u{B5}' => 'à',
        '\u{B6}' => 'ả',
        '\u{B7}' => 'ã',
        '\u{B8}' => 'á',
        '\u{B9}' => 'ạ',
        '\u{BB}' => 'ằ',
        '\u{BC}' => 'ẳ',
        '\u{BD}' => 'ẵ',
        '\u{BE}' => 'ắ',
        '\u{C6}' => 'ặ',
        '\u{C7}' => 'ầ',
        '\u{C8}' => 'ẩ',
        '\u{C9}' => 'ẫ',
        '\u{CA}' => 'ấ',
        '\u{CB}' => 'ậ',
        '\u{CC}' => 'è',
        '\u{CE}' => 'ẻ',
        '\u{CF}' => 'ẽ',
        '\u{D0}' => 'é',
        '\u{D1}' => 'ẹ',
        '\u{D2}' => 'ề',
        '\u{D3}' => 'ể',
        '\u{D4}' => 'ễ',
        '\u{D5}' => 'ế',
        '\u{D6}' => 'ệ',
        '\u{D7}' => 'ì',
        '\u{D8}' => 'ỉ',
        '\u{DC}' => 'ĩ',
        '\u{DD}' => 'í',
        '\u{DE}' => 'ị',
        '\u{DF}' => 'ò',
        '\u{E1}' => 'ỏ',
        '\u{E2}' => 'õ',
        '\u{E3}' => 'ó',
        '\u{E4}' => 'ọ',
        '\u{E5}' => 'ồ',
        '\u{E6}' => 'ổ',
        '\u{E7}' => 'ỗ',
        '\u{E8}' => 'ố',
        '\u{E9}' => 'ộ',
        '\u{EA}' => 'ờ',
        '\u{EB}' => 'ở',
        '\u{EC}' => 'ỡ',
        '\u{ED}' => 'ớ',
        '\u{EE}' => 'ợ',
        '\u{EF}' => 'ù',
        '\u{F1}' => 'ủ',
        '\u{F2}' => 'ũ',
        '\u{F3}' => 'ú',
        '\u{F4}' => 'ụ',
        '\u{F5}' => 'ừ',
        '\u{F6}' => 'ử',
        '\u{F7}' => 'ữ',
        '\u{F8}' => 'ứ',
        '\u{F9}' => 'ự',
        '\u{FA}' => 'ỳ',
        '\u{FB}' => 'ỷ',
        '\u{FC}' => 'ỹ',
        '\u{FD}' => 'ý',
        '\u{FE}' => 'ỵ',
        _ => return None,
    };
    Some(decoded)
}

/// The TCVN3 code of a Unicode letter (the inverse of [`tcvn3_letter`]), for tests and tools that need to
/// produce legacy text. Letters outside TCVN3's repertoire (toned capitals) have none.
pub fn tcvn3_code(letter: char) -> Option<char> {
    (0xA1u32..=0xFE)
        .filter_map(char::from_u32)
        .find(|code| tcvn3_letter(*code) == Some(letter))
}

/// Decodes `raw` when it is TCVN3 read as Latin-1 (mapping.md, Text step 1); `None` leaves it alone.
pub fn decode_if_tcvn3(raw: &str) -> Option<String> {
    // TCVN3's letter codes are all beyond ASCII; most values are plain ASCII and need no closer look.
    if raw.is_ascii() {
        return None;
    }
    let mut has_letter_code = false;
    for character in raw.chars() {
        // Anything beyond Latin-1 was written by a Unicode system: ordinary text bails out here, early.
        if character > '\u{FF}' {
            return None;
        }
        has_letter_code |= tcvn3_letter(character).is_some();
    }
    if !has_letter_code {
        return None;
    }
    decode_latin1_if_tcvn3(raw)
}

/// [`decode_if_tcvn3`] for a value already known to be all Latin-1 with a letter code: decoded when that
/// turns more of its words into syllables, `count_syllables(&decoded) > count_syllables(raw)`.
fn decode_latin1_if_tcvn3(raw: &str) -> Option<String> {
    let decode =
        |word: &str| -> String { word.chars().map(|c| tcvn3_letter(c).unwrap_or(c)).collect() };
    // Counted only where it can differ, one word at a time, so that a value that stays as it is (most
    // do) is never decoded whole: no letter code is white space, so the words of both pair up, and a
    // word without a letter code is the same in both.
    let gained: isize = raw
        .split_whitespace()
        .filter(|word| word.chars().any(|c| tcvn3_letter(c).is_some()))
        .map(|raw_word| {
            isize::from(counts_as_syllable(&decode(raw_word)))
                - isize::from(counts_as_syllable(raw_word))
        })
        .sum();
    (gained > 0).then(|| decode(raw))
}

/// How many white-space separated words of `text` are Vietnamese syllables (ASCII punctuation and
/// digits around a word do not count against it). Control and invisible characters are left out of the
/// words first, as the later steps of the text rule will leave them out, so that a value is judged as it
/// will read: otherwise a stray control character could hide a word now and expose it on a second pass.
pub fn count_syllables(text: &str) -> usize {
    text.split_whitespace()
        .filter(|word| counts_as_syllable(word))
        .count()
}

/// Whether one white-space separated word counts in [`count_syllables`].
fn counts_as_syllable(word: &str) -> bool {
    let letters: Cow<'_, str> = if word.chars().any(|c| c.is_control() || is_invisible(c)) {
        Cow::Owned(
            word.chars()
                .filter(|c| !c.is_control() && !is_invisible(*c))
                .collect(),
        )
    } else {
        Cow::Borrowed(word)
    };
    let core = letters.trim_matches(|c: char| c.is_ascii_punctuation() || c.is_ascii_digit());
    !core.is_empty() && is_syllable(core)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(text: &str) -> String {
        text.chars().map(|c| tcvn3_code(c).unwrap_or(c)).collect()
    }

    #[test]
    fn decodes_tcvn3_names_and_summaries() {
        let name = clean("NguyÔn V¨n An", Some(LIMIT_APPLICANT_NAME));
        assert_eq!(name.text, "Nguyễn Văn An");
        assert!(name.converted);
        assert_eq!(
            clean("Xin cÊp giÊy phÐp x©y dùng", None).text,
            "Xin cấp giấy phép xây dựng"
        );
        // TCVN3's ư is U+00AD, which the invisible-character step would otherwise remove.
        assert_eq!(clean("Tr\u{AD}êng", None).text, "Trường");
    }

    #[test]
    fn decodes_exactly_when_decoding_gains_syllables() {
        for raw in [
            "NguyÔn V¨n An",
            "Võ Thu Hà",
            "Lê Thu Hà",
            "cÊp cÊp Hµ 12 ©",
            "x©y dùng 12 c¨n",
            "Tr\u{AD}êng \u{AD}",
            "Ö\u{0}Ö",
            "café crème",
            "UBND ©",
        ] {
            let decoded: String = raw.chars().map(|c| tcvn3_letter(c).unwrap_or(c)).collect();
            let gains = count_syllables(&decoded) > count_syllables(raw);
            assert_eq!(decode_if_tcvn3(raw).is_some(), gains, "{raw}");
        }
    }

    #[test]
    fn round_trips_encoded_text() {
        for original in [
            "Trần Văn Bình",
            "Phòng Kinh tế",
            "Đơn đề nghị cấp giấy phép xây dựng",
            "Ưu tiên",
        ] {
            let encoded = encode(original);
            assert_ne!(encoded, original);
            assert_eq!(clean(&encoded, None).text, original, "{encoded}");
        }
    }

    #[test]
    fn leaves_clean_latin1_vietnamese_alone() {
        for text in [
            "Lê Thu Hà",
            "Hà Nội",
            "Ô Quy Hồ",
            "Trần Thị Lý",
            "café crème",
            "Côte d'Ivoire",
        ] {
            let cleaned = clean(text, None);
            assert_eq!(cleaned.text, text);
            assert!(!cleaned.converted, "{text}");
        }
    }

    #[test]
    fn strips_controls_invisibles_and_folds_space() {
        let cleaned = clean(
            "  Nguye\u{302}\u{303}n  Thi\u{323}\u{200B} Hoa\t",
            Some(200),
        );
        assert_eq!(cleaned.text, "Nguyễn Thị Hoa");
        assert_eq!(
            clean("Xin cấp phép\u{7} xây dựng   nhà ở", None).text,
            "Xin cấp phép xây dựng nhà ở"
        );
        assert_eq!(clean("a\r\nb\u{FEFF}c", None).text, "a bc");
        assert_eq!(clean("e\u{200B}\u{301}", None).text, "é");
    }

    #[test]
    fn the_cheap_stripping_test_agrees_with_the_full_one() {
        let full = |c: char| (c.is_whitespace() && c != ' ') || c.is_control() || is_invisible(c);
        for character in (0u32..0x3100).filter_map(char::from_u32) {
            assert_eq!(
                needs_stripping(&format!("a{character}b")),
                full(character),
                "{character:?}"
            );
        }
    }

    #[test]
    fn the_cheap_nfc_test_agrees_with_the_full_one() {
        for text in [
            "Nguyễn Thị Hoa",
            "Ơn Ưng ơ ư",
            "café",
            "Nguye\u{302}\u{303}n",
            "\u{2000}",
            "\u{212B}",
        ] {
            if surely_nfc(text) {
                assert_eq!(is_nfc_quick(text.chars()), IsNormalized::Yes, "{text}");
            }
        }
        let all_covered = (0u32..0x300)
            .chain(0x1E00..0x1F00)
            .filter_map(char::from_u32);
        for character in all_covered {
            assert_eq!(
                is_nfc_quick(std::iter::once(character)),
                IsNormalized::Yes,
                "{character:?}"
            );
        }
    }

    #[test]
    fn the_one_pass_clean_test_agrees_with_the_full_rule() {
        let mut samples: Vec<String> = [
            "Nguyễn Thị Hoa",
            "Lê Thu Hà",
            "NguyÔn V¨n An",
            "café crème",
            " a",
            "a ",
            "a  b",
            "a b",
            "",
            "Ơn Ưng ơ ư đ",
            "UBND ©",
        ]
        .iter()
        .map(|text| (*text).to_owned())
        .collect();
        for character in (0u32..0x3100).filter_map(char::from_u32) {
            samples.push(format!("Hà{character}Nội"));
            samples.push(format!("a{character}b"));
        }
        samples.push("\u{FFFD}".to_owned());
        samples.push("Nguy\u{FDD0}n".to_owned());
        for text in &samples {
            for limit in [None, Some(3), Some(1000)] {
                let look = first_look(text, limit);
                let vouched = look == FirstLook::Clean
                    || (look == FirstLook::CleanUnlessTcvn3 && decode_if_tcvn3(text).is_none());
                let full = clean_steps(text, limit);
                if vouched {
                    assert_eq!(full.text, *text, "{text:?}");
                    assert!(
                        !full.converted && !full.truncated && !full.invalid,
                        "{text:?}"
                    );
                }
                assert_eq!(clean(text, limit), full, "{text:?} {limit:?}");
            }
        }
        assert_eq!(first_look("Lê Thu Hà", None), FirstLook::CleanUnlessTcvn3);
        assert_eq!(first_look("Nguyễn Thị Hoa", None), FirstLook::Clean);
    }

    #[test]
    fn truncates_at_a_character_boundary() {
        let long = "ở ".repeat(600);
        let cleaned = clean(&long, Some(LIMIT_SUMMARY));
        assert!(cleaned.truncated);
        assert_eq!(cleaned.text.chars().count(), 999);
        let exact = "ở".repeat(1000);
        assert!(!clean(&exact, Some(LIMIT_SUMMARY)).truncated);
    }

    #[test]
    fn control_characters_do_not_hide_words_from_detection() {
        // Judged as it will read ("Ö"), the value is TCVN3 for "ệ": converting on the first pass keeps
        // the rule idempotent.
        let once = clean("\0Ö\0", None);
        assert_eq!(once.text, "ệ");
        assert_eq!(clean(&once.text, None).text, "ệ");
    }

    #[test]
    fn flags_replacement_characters_and_noncharacters() {
        assert!(clean("Nguy\u{FFFD}n", None).invalid);
        assert!(!clean("Nguyễn", None).invalid);
        for noncharacter in [
            '\u{FDD0}',
            '\u{FDEF}',
            '\u{FFFE}',
            '\u{FFFF}',
            '\u{1FFFE}',
            '\u{10FFFF}',
        ] {
            assert!(
                clean(&format!("Nguy{noncharacter}n"), None).invalid,
                "{noncharacter:?}"
            );
        }
        let noncharacters = (0u32..=0x10FFFF)
            .filter_map(char::from_u32)
            .filter(|character| is_invalid_char(*character))
            .count();
        assert_eq!(noncharacters, 66 + 1);
        for fine in ['\u{FDCF}', '\u{FDF0}', '\u{FFFC}', '\u{1FFFD}', '\u{E000}'] {
            assert!(!is_invalid_char(fine), "{fine:?}");
        }
    }

    #[test]
    fn line_and_space_breaks_become_one_space_other_controls_nothing() {
        for break_character in [
            '\t', '\n', '\r', '\u{B}', '\u{C}', '\u{85}', '\u{2028}', '\u{2029}',
        ] {
            assert_eq!(
                clean(&format!("Hà{break_character}Nội"), None).text,
                "Hà Nội",
                "{break_character:?}"
            );
        }
        assert_eq!(clean("Hà\r\n\r\nNội", None).text, "Hà Nội");
        for removed in [
            '\0', '\u{7}', '\u{1B}', '\u{1C}', '\u{1F}', '\u{7F}', '\u{80}', '\u{9F}', '\u{AD}',
            '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}',
        ] {
            assert_eq!(
                clean(&format!("Hà{removed}Nội"), None).text,
                "HàNội",
                "{removed:?}"
            );
        }
    }

    #[test]
    fn the_steps_run_in_the_order_of_mapping_md() {
        // 1 before 2: TCVN3's ư (U+00AD) is decoded before invisible characters are removed.
        assert_eq!(clean("Tr\u{AD}êng\u{7}", None).text, "Trường");
        // 2 before 3: a mark separated from its letter by a removed character is composed.
        assert_eq!(clean("Nguye\u{200B}\u{302}\u{303}n", None).text, "Nguyễn");
        // 3 before 5: the limit counts composed characters.
        let decomposed = "e\u{301}".repeat(50);
        let cleaned = clean(&decomposed, Some(LIMIT_ACTOR));
        assert!(!cleaned.truncated);
        assert_eq!(cleaned.text, "é".repeat(50));
        // 4 before 5, and trimmed after the cut.
        let spaced = format!("{}  \n  x", "a".repeat(49));
        let cleaned = clean(&spaced, Some(LIMIT_ACTOR));
        assert!(cleaned.truncated);
        assert_eq!(cleaned.text, "a".repeat(49));
        // A noncharacter is still there after every step: invalid.
        assert!(clean("  Hà \u{FDD0} Nội ", None).invalid);
    }
}
