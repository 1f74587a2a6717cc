//! A Vietnamese syllable validator (onset + rhyme + tone), used to decide whether a Latin-1 value is
//! really TCVN3 bytes: decoding must turn more of its words into Vietnamese syllables than there were.
//!
//! The rules are the orthographic ones: an optional onset from the closed list of initial consonants, a
//! rhyme from the closed list of rhymes, at most one tone mark, a rhyme ending in a stop (`c`, `ch`, `p`,
//! `t`) only with the sắc or nặng tone, and the spelling constraints `k`/`gh`/`ngh` before front vowels,
//! `c`/`g`/`ng` elsewhere.

use std::collections::HashSet;
use std::sync::LazyLock;

/// Vowel letters with their five toned forms, in the order: no tone, huyền, sắc, hỏi, ngã, nặng.
const TONED_VOWELS: [(char, [char; 6]); 12] = [
    ('a', ['a', 'à', 'á', 'ả', 'ã', 'ạ']),
    ('ă', ['ă', 'ằ', 'ắ', 'ẳ', 'ẵ', 'ặ']),
    ('â', ['â', 'ầ', 'ấ', 'ẩ', 'ẫ', 'ậ']),
    ('e', ['e', 'è', 'é', 'ẻ', 'ẽ', 'ẹ']),
    ('ê', ['ê', 'ề', 'ế', 'ể', 'ễ', 'ệ']),
    ('i', ['i', 'ì', 'í', 'ỉ', 'ĩ', 'ị']),
    ('o', ['o', 'ò', 'ó', 'ỏ', 'õ', 'ọ']),
    ('ô', ['ô', 'ồ', 'ố', 'ổ', 'ỗ', 'ộ']),
    ('ơ', ['ơ', 'ờ', 'ớ', 'ở', 'ỡ', 'ợ']),
    ('u', ['u', 'ù', 'ú', 'ủ', 'ũ', 'ụ']),
    ('ư', ['ư', 'ừ', 'ứ', 'ử', 'ữ', 'ự']),
    ('y', ['y', 'ỳ', 'ý', 'ỷ', 'ỹ', 'ỵ']),
];

/// Tones as indices into [`TONED_VOWELS`]' rows.
const TONE_SAC: usize = 2;
const TONE_NANG: usize = 5;

/// Initial consonants, longest first so that `ngh` is tried before `ng` and `n`.
const ONSETS: [&str; 27] = [
    "ngh", "ng", "nh", "ch", "gh", "gi", "kh", "ph", "qu", "th", "tr", "b", "c", "d", "đ", "g",
    "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "x",
];

/// Every rhyme of standard orthography, without tone marks.
const RHYMES: &[&str] = &[
    "a", "ac", "ach", "ai", "am", "an", "ang", "anh", "ao", "ap", "at", "au", "ay", "ăc", "ăm",
    "ăn", "ăng", "ăp", "ăt", "âc", "âm", "ân", "âng", "âp", "ât", "âu", "ây", "e", "ec", "em",
    "en", "eng", "eo", "ep", "et", "ê", "êch", "êm", "ên", "ênh", "êp", "êt", "êu", "i", "ia",
    "ich", "iêc", "iêm", "iên", "iêng", "iêp", "iêt", "iêu", "im", "in", "inh", "ip", "it", "iu",
    "o", "oa", "oac", "oach", "oai", "oam", "oan", "oang", "oanh", "oao", "oap", "oat", "oay",
    "oăc", "oăm", "oăn", "oăng", "oăt", "oc", "oe", "oen", "oeo", "oet", "oi", "om", "on", "ong",
    "ooc", "oong", "op", "ot", "ô", "ôc", "ôi", "ôm", "ôn", "ông", "ôp", "ôt", "ơ", "ơi", "ơm",
    "ơn", "ơp", "ơt", "u", "ua", "uân", "uâng", "uât", "uây", "uc", "uê", "uêch", "uênh", "uơ",
    "ui", "um", "un", "ung", "uôc", "uôi", "uôm", "uôn", "uông", "uôt", "up", "ut", "uy", "uya",
    "uych", "uyên", "uyêt", "uynh", "uyt", "uyu", "ư", "ưa", "ưc", "ưi", "ưm", "ưn", "ưng", "ưt",
    "ưu", "ươc", "ươi", "ươm", "ươn", "ương", "ươp", "ươt", "ươu", "y", "yêm", "yên", "yêng",
    "yêt", "yêu",
];

/// The longest syllable (`nghiêng`) has seven letters; anything longer is not one.
const MAX_SYLLABLE_LETTERS: usize = 7;

/// Splits a lower-case letter into its toneless base and its tone index.
fn split_tone(letter: char) -> (char, usize) {
    // Every toned form is beyond ASCII, and an ASCII letter is its own toneless base: no search needed.
    if letter.is_ascii() {
        return (letter, 0);
    }
    for (base, forms) in TONED_VOWELS.iter() {
        if let Some(tone) = forms.iter().position(|form| *form == letter) {
            return (*base, tone);
        }
    }
    (letter, 0)
}

/// True when `word` (one word, any case, no surrounding punctuation) is a Vietnamese syllable.
pub fn is_syllable(word: &str) -> bool {
    let mut letters = [0u8; 4 * MAX_SYLLABLE_LETTERS];
    let mut used = 0;
    let mut tone = 0;
    let mut count = 0;
    for character in word.chars() {
        count += 1;
        if count > MAX_SYLLABLE_LETTERS {
            return false;
        }
        // Vietnamese letters have one-character lower-case forms; anything else is not a letter we know.
        let mut lower = character.to_lowercase();
        let (Some(lowered), None) = (lower.next(), lower.next()) else {
            return false;
        };
        let (base, this_tone) = split_tone(lowered);
        if this_tone != 0 {
            if tone != 0 {
                return false;
            }
            tone = this_tone;
        }
        used += base.encode_utf8(&mut letters[used..]).len();
    }
    // The buffer holds only whole characters copied from a `str`, so it is valid UTF-8.
    let Ok(toneless) = std::str::from_utf8(&letters[..used]) else {
        return false;
    };
    is_toneless_syllable(toneless, tone)
}

fn is_toneless_syllable(toneless: &str, tone: usize) -> bool {
    if toneless.is_empty() {
        return false;
    }
    if rhyme_fits("", toneless, tone) {
        return true;
    }
    ONSETS.iter().any(|onset| {
        toneless.strip_prefix(onset).is_some_and(|rhyme| {
            rhyme_fits(onset, rhyme, tone)
                // `gi` swallows the `i` of a rhyme: `giếng` is gi + iêng, `gìn` is g + in.
                || (*onset == "gi" && rhyme.starts_with('ê') && rhyme_fits("", &format!("i{rhyme}"), tone))
        })
    })
}

/// [`RHYMES`] as a set: a word is tried against every onset it starts with, and a linear search of the
/// list for each made TCVN3 detection the costliest step of normalizing a dossier.
static RHYME_SET: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| RHYMES.iter().copied().collect());

fn rhyme_fits(onset: &str, rhyme: &str, tone: usize) -> bool {
    if !RHYME_SET.contains(rhyme) {
        return false;
    }
    let ends_in_stop = ["c", "ch", "p", "t"]
        .iter()
        .any(|stop| rhyme.ends_with(stop));
    if ends_in_stop && tone != 0 && tone != TONE_SAC && tone != TONE_NANG {
        return false;
    }
    if ends_in_stop && tone == 0 {
        return false;
    }
    let front = rhyme.starts_with(['i', 'e', 'ê', 'y']);
    match onset {
        "k" | "gh" | "ngh" => front,
        "c" | "ng" => !front,
        "g" => !rhyme.starts_with(['e', 'ê']),
        // `qu` already holds the medial u, so the rhyme must not start with another one.
        "qu" => !rhyme.starts_with(['u', 'o']),
        "gi" => !rhyme.starts_with('i'),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::is_syllable;

    #[test]
    fn accepts_common_syllables() {
        for word in [
            "Nguyễn",
            "Thị",
            "Hoa",
            "Văn",
            "An",
            "Lê",
            "Thu",
            "Hà",
            "nghiêng",
            "giếng",
            "gìn",
            "quốc",
            "khuya",
            "tuyết",
            "Đơn",
            "đề",
            "nghị",
            "xây",
            "dựng",
            "cấp",
            "giấy",
            "phép",
            "ở",
            "Lờ",
            "Bình",
            "Trần",
            "kỳ",
            "được",
            "người",
            "xã",
            "ký",
            "ĐƯỜNG",
        ] {
            assert!(is_syllable(word), "{word}");
        }
    }

    #[test]
    fn rejects_non_syllables() {
        for word in [
            "NguyÔn",
            "V¨n",
            "cÊp",
            "giÊy",
            "phÐp",
            "x©y",
            "UBND",
            "ce",
            "ngi",
            "ghu",
            "cap",
            "càp",
            "hello",
            "world",
            "abc",
            "",
            "quu",
            "anhh",
            "nghiênggg",
        ] {
            assert!(!is_syllable(word), "{word}");
        }
    }
}
