//! A Vietnamese syllable validator (onset + rhyme + tone), used to decide whether a Latin-1 value is
//! really TCVN3 bytes: decoding must turn more of its words into Vietnamese syllables than there were.
//!
//! The rules are those of standard orthography:
//! - an optional onset from the closed list of initial consonants, a rhyme from the closed list of rhymes
//!   (with its medial `o`/`u` when it has one), at most one tone mark;
//! - a rhyme ending in a stop (`c`, `ch`, `p`, `t`) only with the sắc or nặng tone;
//! - `k`/`gh`/`ngh` before front vowels (`i`, `e`, `ê`, `y`), `c`/`g`/`ng` elsewhere;
//! - the medial after /k/ is spelled `qu` (`qua`, `quân`, `quỳnh`, `quýt`, never `coa` or `cuân`), and
//!   `qu` takes no second medial nor the vowels `u`, `ư`, `o` (`quư` is not a syllable);
//! - the diphthong /iə/ is `iê` after an onset (`biên`) and `yê` without one or after the medial
//!   (`yên`, `uyên`, `quyên`): `iêm` and `byên` are not syllables;
//! - `gi` swallows the `i` of a rhyme (`giếng` is gi + iêng), and takes no medial.
//!
//! `tests/it/normalize_syllables.rs` checks the grammar against a Vietnamese spelling dictionary (Debian's
//! `hunspell-vi`) when it is installed.

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

/// Every rhyme of standard orthography, without tone marks, with its medial (`oa`, `uân`, `uynh`).
pub const RHYMES: &[&str] = &[
    "a", "ac", "ach", "ai", "am", "an", "ang", "anh", "ao", "ap", "at", "au", "ay", "ăc", "ăm",
    "ăn", "ăng", "ăp", "ăt", "âc", "âm", "ân", "âng", "âp", "ât", "âu", "ây", "e", "ec", "em",
    "en", "eng", "eo", "ep", "et", "ê", "êch", "êm", "ên", "ênh", "êp", "êt", "êu", "i", "ia",
    "ich", "iêc", "iêm", "iên", "iêng", "iêp", "iêt", "iêu", "im", "in", "inh", "ip", "it", "iu",
    "o", "oa", "oac", "oach", "oai", "oam", "oan", "oang", "oanh", "oao", "oap", "oat", "oay",
    "oăc", "oăm", "oăn", "oăng", "oăp", "oăt", "oc", "oe", "oen", "oeo", "oet", "oi", "om", "on",
    "ong", "ooc", "oong", "op", "ot", "ô", "ôc", "ôi", "ôm", "ôn", "ông", "ôp", "ôt", "ơ", "ơi",
    "ơm", "ơn", "ơp", "ơt", "u", "ua", "uân", "uâng", "uât", "uây", "uc", "uê", "uêch", "uênh",
    "uơ", "uên", "uêt", "uêu", "ui", "um", "un", "ung", "uôc", "uôi", "uôm", "uôn", "uông", "uôt",
    "up", "ut", "uy", "uya", "uych", "uyên", "uyêt", "uynh", "uyt", "uyu", "ư", "ưa", "ưc", "ưi",
    "ưm", "ưn", "ưng", "ưt", "ưu", "ươc", "ươi", "ươm", "ươn", "ương", "ươp", "ươt", "ươu", "y",
    "yêm", "yên", "yêng", "yêt", "yêu",
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
    with_toneless(word, is_toneless_syllable).unwrap_or(false)
}

/// The rhyme of a syllable as [`RHYMES`] lists it (toneless, with its medial: `quân` → `uân`,
/// `Quỳnh` → `uynh`), or `None` for a word that is not a syllable; for the checks against a dictionary.
pub fn rhyme_of(word: &str) -> Option<String> {
    with_toneless(word, |toneless, tone| {
        if rhyme_fits("", toneless, tone) {
            return Some(toneless.to_owned());
        }
        ONSETS.iter().find_map(|onset| {
            let rest = toneless.strip_prefix(onset)?;
            if !rhyme_fits(onset, rest, tone) {
                return None;
            }
            Some(match (*onset, medial_after_qu(rest)) {
                ("qu", Some(medial)) => format!("{medial}{rest}"),
                _ => rest.to_owned(),
            })
        })
    })
    .flatten()
}

/// Calls `check` with the word lower-cased and without its tone mark, and the tone; `None` when the word
/// has two tone marks, a character that is not a single lower-case letter, or too many letters.
fn with_toneless<R>(word: &str, check: impl FnOnce(&str, usize) -> R) -> Option<R> {
    let mut letters = [0u8; 4 * MAX_SYLLABLE_LETTERS];
    let mut used = 0;
    let mut tone = 0;
    let mut count = 0;
    for character in word.chars() {
        count += 1;
        if count > MAX_SYLLABLE_LETTERS {
            return None;
        }
        // Vietnamese letters have one-character lower-case forms; anything else is not a letter we know.
        let mut lower = character.to_lowercase();
        let (Some(lowered), None) = (lower.next(), lower.next()) else {
            return None;
        };
        let (base, this_tone) = split_tone(lowered);
        if this_tone != 0 {
            if tone != 0 {
                return None;
            }
            tone = this_tone;
        }
        used += base.encode_utf8(&mut letters[used..]).len();
    }
    // The buffer holds only whole characters copied from a `str`, so it is valid UTF-8.
    let toneless = std::str::from_utf8(&letters[..used]).ok()?;
    Some(check(toneless, tone))
}

fn is_toneless_syllable(toneless: &str, tone: usize) -> bool {
    if toneless.is_empty() {
        return false;
    }
    if rhyme_fits("", toneless, tone) {
        return true;
    }
    // Comparing first bytes before whole prefixes skips most onsets cheaply.
    let first = toneless.as_bytes().first();
    ONSETS.iter().any(|onset| {
        onset.as_bytes().first() == first
            && toneless
                .strip_prefix(onset)
                .is_some_and(|rhyme| rhyme_fits(onset, rhyme, tone))
    })
}

/// [`RHYMES`] as a set: a word is tried against every onset it starts with, and a linear search of the
/// list for each made TCVN3 detection the costliest step of normalizing a dossier.
static RHYME_SET: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| RHYMES.iter().copied().collect());

/// Rhymes that begin with the medial /w/: spelled `o` before `a`, `ă`, `e` and `u` before `â`, `ê`, `y`,
/// `ơ`. After /k/ the medial is written into the onset (`qu`), so `c` never takes one of these.
fn has_medial(rhyme: &str) -> bool {
    ["oa", "oă", "oe", "uâ", "uê", "uy", "uơ"]
        .iter()
        .any(|medial| rhyme.starts_with(medial))
}

/// Whether a toneless rhyme may carry `tone`: a rhyme ending in a stop takes only sắc or nặng.
fn tone_fits(rhyme: &str, tone: usize) -> bool {
    let ends_in_stop = ["c", "ch", "p", "t"]
        .iter()
        .any(|stop| rhyme.ends_with(stop));
    !ends_in_stop || tone == TONE_SAC || tone == TONE_NANG
}

fn rhyme_fits(onset: &str, rhyme: &str, tone: usize) -> bool {
    if onset == "qu" {
        return rhyme_fits_after_qu(rhyme, tone);
    }
    if !RHYME_SET.contains(rhyme) || !tone_fits(rhyme, tone) {
        return false;
    }
    // /iə/ is `iê` after an onset and `yê` at the start of a syllable.
    if rhyme.starts_with("iê") && onset.is_empty() || rhyme.starts_with("yê") && !onset.is_empty()
    {
        return false;
    }
    let front = rhyme.starts_with(['i', 'e', 'ê', 'y']);
    match onset {
        "k" | "gh" | "ngh" => front,
        "c" => !front && !has_medial(rhyme),
        "ng" => !front,
        "g" => !rhyme.starts_with(['e', 'ê']),
        // `gì` is g + ì and `giếng` g + iêng: after `gi` itself comes neither an `i` nor a medial.
        "gi" => !rhyme.starts_with('i') && !has_medial(rhyme),
        _ => true,
    }
}

/// After `qu` the `u` is the medial: `qua` is /k/ + oa, `quân` /k/ + uân, `quỳnh` /k/ + uynh. The rest
/// must be such a rhyme without its medial letter. Two rhymes occur only here: `quốc` and (southern)
/// `quạu`; and `qui`, `quí`, `quít` are the older spellings of `quy`, `quý`, `quýt`.
fn rhyme_fits_after_qu(rest: &str, tone: usize) -> bool {
    if matches!(rest, "ôc" | "au" | "i" | "it") {
        return tone_fits(rest, tone);
    }
    let Some(medial) = medial_after_qu(rest) else {
        return false;
    };
    let mut full = String::with_capacity(rest.len() + 1);
    full.push(medial);
    full.push_str(rest);
    RHYME_SET.contains(full.as_str()) && tone_fits(&full, tone)
}

/// The medial letter that `qu` stands for before `rest`: `o` before `a`, `ă`, `e`, `u` before `â`, `ê`,
/// `y`, `ơ`; none before any other vowel (`quư`, `quo` are not syllables).
fn medial_after_qu(rest: &str) -> Option<char> {
    if rest.starts_with(['a', 'ă', 'e']) {
        Some('o')
    } else if rest.starts_with(['â', 'ê', 'y', 'ơ']) {
        Some('u')
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{is_syllable, rhyme_of};

    #[test]
    fn names_the_rhyme_with_its_medial() {
        for (word, rhyme) in [
            ("quân", "uân"),
            ("Quỳnh", "uynh"),
            ("qua", "oa"),
            ("quốc", "ôc"),
            ("giếng", "iêng"),
            ("gì", "i"),
            ("nghiêng", "iêng"),
            ("yên", "yên"),
            ("khuya", "uya"),
        ] {
            assert_eq!(rhyme_of(word).as_deref(), Some(rhyme), "{word}");
        }
        assert_eq!(rhyme_of("coa"), None);
    }

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
            // The spelling rules around `qu`, `gi` and the medial.
            "Quỳnh",
            "quýt",
            "quít",
            "quy",
            "quyên",
            "quyết",
            "quên",
            "quắp",
            "quơ",
            "que",
            "qua",
            "quân",
            "gì",
            "giữa",
            "giường",
            "yên",
            "yếu",
            "uyên",
            "khuya",
            "khuỷu",
            "huých",
            "ngoằn",
            "ngoài",
            "thuở",
            "oà",
            "uy",
            "ỉa",
            "kìa",
            "biên",
            "kiên",
            "Vy",
            "Mỹ",
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
            // issue 11: each breaks one spelling rule.
            "quư",
            "coa",
            "byên",
            "iêm",
            "cuân",
            "cuy",
            "quo",
            "quu",
            "kuy",
            "giuy",
            "yêm̀",
            "iên",
            "tyên",
            "bia̋",
        ] {
            assert!(!is_syllable(word), "{word}");
        }
    }
}
