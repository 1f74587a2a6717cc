//! The syllable grammar behind TCVN3 detection (`src/normalize/syllable.rs`), checked against a
//! Vietnamese spelling dictionary: Debian's `hunspell-vi` (LibreOffice's Vietnamese dictionary, GPL-2,
//! so it is read where the package installs it and not copied into this repository). `.ci/run` installs
//! the package; without it these tests say that they were skipped (`tests/it/common/skip.rs`), and under
//! `CI=true` they fail instead.

use crate::common::skip;

use std::collections::BTreeSet;

use tthc_sync::normalize::syllable::{RHYMES, is_syllable, rhyme_of};

const DICTIONARY: &str = "/usr/share/hunspell/vi_VN.dic";

/// Words of the dictionary that are not syllables of standard spelling, and rightly rejected:
/// abbreviations and names of formats, loanwords kept in their own spelling, and a few variant or
/// dialect spellings outside the orthography's rules.
const NOT_SYLLABLES: &[&str] = &[
    // Abbreviations and names of formats and encodings.
    "ABC", "ASCII", "GIF", "HCM", "HK", "HTML", "HĐND", "JPEG", "LHQ", "PDF", "PNG", "TCVN", "TV",
    "Telex", "Tp", "UBND", "URL", "Unicode", "VIQR", "VISCII", "VN", "VNI", "v",
    // Loanwords in their own spelling (`gen`, `ka`, `ping` break the c/k and g/gh rules; `xit`, `gip`
    // and `têt` a stop without sắc or nặng).
    "basoi", "email", "gen", "gip", "gram", "internet", "intranet", "ka", "palăng", "ping", "tivi",
    "tout", "tuyn", "web", "xit", "têt",
    // Variant spellings of `quàng`, `quạng`, `quắt`, and the rare `quấc`.
    "quoàng", "quoạng", "quoắt", "quấc",
];

/// The dictionary's words (the first line is their count; hunspell affix flags follow a `/`), or `None`
/// after recording the skip when the package is not installed.
fn dictionary() -> Option<Vec<String>> {
    let Ok(text) = std::fs::read_to_string(DICTIONARY) else {
        skip::skip(&format!(
            "{DICTIONARY} is missing (apt-get install hunspell-vi)"
        ));
        return None;
    };
    let words: Vec<String> = text
        .lines()
        .skip(1)
        .map(|line| line.split('/').next().unwrap_or_default().trim().to_owned())
        .filter(|word| !word.is_empty())
        .collect();
    assert!(
        words.len() > 6000,
        "{DICTIONARY} holds {} words",
        words.len()
    );
    Some(words)
}

#[test]
fn every_word_of_the_spelling_dictionary_is_a_syllable_but_the_listed_exceptions() {
    let Some(words) = dictionary() else {
        return;
    };
    let exceptions: BTreeSet<&str> = NOT_SYLLABLES.iter().copied().collect();
    let rejected: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .filter(|word| !is_syllable(word) && !exceptions.contains(word))
        .collect();
    assert!(
        rejected.is_empty(),
        "{} words of the dictionary are not syllables by the grammar: {rejected:?}",
        rejected.len()
    );
    // The exceptions stay honest: each is in the dictionary and rejected by the grammar.
    for exception in NOT_SYLLABLES {
        assert!(
            words.iter().any(|word| word == exception),
            "{exception} is not in the dictionary"
        );
        assert!(
            !is_syllable(exception),
            "{exception} is a syllable now: take it off the list"
        );
    }
}

#[test]
fn every_rhyme_of_the_grammar_occurs_in_the_spelling_dictionary() {
    let Some(words) = dictionary() else {
        return;
    };
    let found: BTreeSet<String> = words.iter().filter_map(|word| rhyme_of(word)).collect();
    let unseen: Vec<&str> = RHYMES
        .iter()
        .copied()
        .filter(|rhyme| !found.contains(*rhyme))
        .collect();
    assert!(
        unseen.is_empty(),
        "rhymes that no word of the dictionary has: {unseen:?}"
    );
}

#[test]
fn the_issue_examples_are_judged_as_the_dictionary_judges_them() {
    let Some(words) = dictionary() else {
        return;
    };
    let listed = |word: &str| words.iter().any(|entry| entry == word);
    // Quỳnh is a common name: a word of the language, so a TCVN3 value holding it decodes to a syllable.
    for word in ["quỳnh", "quýt", "quyết", "quên", "quốc"] {
        assert!(listed(word), "{word} is in the dictionary");
        assert!(is_syllable(word), "{word} is a syllable");
    }
    // Spellings that break a rule: `qu` before ư, `c` with a medial, `yê` after an onset, `iê` without
    // one.
    for word in ["quư", "coa", "byên", "iêm"] {
        assert!(!listed(word), "{word} is not in the dictionary");
        assert!(!is_syllable(word), "{word} is not a syllable");
    }
}
