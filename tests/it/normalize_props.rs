//! Property tests of normalization: it never panics whatever a field holds, its text output is NFC
//! without control characters, it is deterministic, and the TCVN3 rule converts legacy text back to the
//! original while leaving clean Latin-1-only Vietnamese alone.

use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tthc_sync::normalize::text::{clean, count_syllables, tcvn3_code};
use tthc_sync::normalize::{MappingTables, Normalized, Outcome, normalize_bytes};
use unicode_normalization::is_nfc;

const BASE_FIXTURE: &str = include_str!("../fixtures/normalize/01-online-processing.json");
const TABLES: &str = include_str!("../fixtures/normalize/tables.toml");

fn now() -> Timestamp {
    "2026-11-28T00:00:00+07:00"
        .parse()
        .expect("a valid timestamp")
}

fn base_source() -> Value {
    let fixture: Value = serde_json::from_str(BASE_FIXTURE).expect("fixture is JSON");
    fixture["source"].clone()
}

/// Every place in a SourceDossier that a migrated or broken row may fill with anything.
const PATHS: &[&[&str]] = &[
    &["id"],
    &["code"],
    &["procedure"],
    &["procedure", "code"],
    &["procedure", "name"],
    &["procedure", "sector"],
    &["procedure", "sector", "code"],
    &["procedure", "sector", "name"],
    &["agency"],
    &["agency", "id"],
    &["agency", "code"],
    &["applyMethod"],
    &["applyMethod", "id"],
    &["applicant"],
    &["applicant", "type"],
    &["applicant", "fullname"],
    &["applicant", "identityNumber"],
    &["applicant", "taxCode"],
    &["applicant", "phone"],
    &["applicant", "email"],
    &["summary"],
    &["submittedDate"],
    &["acceptedDate"],
    &["appointmentDate"],
    &["completedDate"],
    &["returnedDate"],
    &["rejectedDate"],
    &["dossierStatus"],
    &["dossierStatus", "id"],
    &["returnMethod", "id"],
    &["fees"],
    &["fees", "0", "amount"],
    &["fees", "0", "name"],
    &["fees", "0", "paymentChannel"],
    &["attachments"],
    &["attachments", "0", "kind"],
    &["attachments", "0", "name"],
    &["supplements"],
    &["history"],
    &["history", "0", "content"],
    &["history", "0", "startedAt"],
    &["history", "0", "finishedAt"],
    &["history", "0", "statusId"],
    &["history", "0", "actor"],
    &["vneidVerified"],
    &["reusesDigitizedComponents"],
    &["note"],
    &["updatedDate"],
    &["deletedDate"],
];

/// Strings a broken source writes: any Unicode, legacy bytes, controls, decomposed marks, replacement
/// characters, dates and amounts in odd shapes.
fn messy_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ \\t\\n\u{0}-\u{1f}\u{a0}-\u{ff}a-zA-Z0-9]{0,30}",
        "[a-z\u{300}-\u{323}\u{200b}\u{feff}\u{ad} ]{0,20}",
        "[0-9:/T+\\-Z. ]{0,30}",
        Just("Nguy\u{FFFD}n".to_owned()),
        Just("NguyÔn V¨n An".to_owned()),
        Just("15/01/2024 08:30:00".to_owned()),
        Just("75.000".to_owned()),
    ]
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|number| json!(number)),
        any::<f64>()
            .prop_filter("JSON has no NaN", |x| x.is_finite())
            .prop_map(|number| json!(number)),
        messy_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Puts `value` at `path`, creating objects and array slots on the way.
fn set_path(target: &mut Value, path: &[&str], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *target = value;
        return;
    };
    if let Ok(index) = first.parse::<usize>() {
        if !target.is_array() {
            *target = Value::Array(Vec::new());
        }
        if let Value::Array(items) = target {
            while items.len() <= index {
                items.push(Value::Object(Map::new()));
            }
            set_path(&mut items[index], rest, value);
        }
    } else {
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        if let Value::Object(fields) = target {
            set_path(
                fields.entry(first.to_string()).or_insert(Value::Null),
                rest,
                value,
            );
        }
    }
}

fn messy_dossier() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((0..PATHS.len(), arbitrary_json()), 0..6).prop_map(|changes| {
        let mut source = base_source();
        for (path, value) in changes {
            set_path(&mut source, PATHS[path], value);
        }
        serde_json::to_vec(&source).expect("a JSON value serializes")
    })
}

fn each_string<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(text) => out.push(text),
        Value::Array(items) => items.iter().for_each(|item| each_string(item, out)),
        Value::Object(fields) => fields.values().for_each(|item| each_string(item, out)),
        _ => {}
    }
}

fn assert_clean_text(text: &str) {
    assert!(is_nfc(text), "not NFC: {text:?}");
    assert!(
        !text.chars().any(char::is_control),
        "control character in {text:?}"
    );
    assert!(
        !text.chars().any(|c| matches!(
            c,
            '\u{AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}'
        )),
        "invisible character in {text:?}"
    );
    assert_eq!(text.trim(), text, "untrimmed {text:?}");
    assert!(!text.contains("  "), "double space in {text:?}");
}

fn payload_strings(normalized: &Normalized) -> Vec<Value> {
    match &normalized.outcome {
        Outcome::Dossier(portal) => std::iter::once(&portal.payload)
            .chain(portal.progress.iter().map(|entry| &entry.payload))
            .map(|payload| serde_json::from_slice(payload).expect("payload is JSON"))
            .collect(),
        _ => Vec::new(),
    }
}

/// Given names, middle names and surnames within TCVN3's repertoire: no capital with a tone mark.
const NAME_SYLLABLES: &[&str] = &[
    "Nguyễn",
    "Trần",
    "Lê",
    "Phạm",
    "Hoàng",
    "Huỳnh",
    "Phan",
    "Vũ",
    "Võ",
    "Đặng",
    "Bùi",
    "Đỗ",
    "Hồ",
    "Ngô",
    "Dương",
    "Lý",
    "Văn",
    "Thị",
    "Hữu",
    "Đức",
    "Minh",
    "Ngọc",
    "Thanh",
    "Xuân",
    "Quốc",
    "Thu",
    "Kim",
    "An",
    "Bình",
    "Hoa",
    "Hương",
    "Lan",
    "Mai",
    "Tuấn",
    "Dũng",
    "Hùng",
    "Phương",
    "Trang",
    "Linh",
    "Nam",
    "Hải",
    "Yến",
    "Quỳnh",
    "Khánh",
    "Nhung",
    "Thảo",
    "Tâm",
    "Đạt",
    "Thắng",
    "Long",
    "Sơn",
    "Hiếu",
    "Nghĩa",
    "Trường",
    "Giang",
    "Uyên",
    "Ưng",
    "Ân",
    "Êm",
    "Ơn",
    "Ăn",
    "xây",
    "dựng",
    "nhà",
    "ở",
    "giấy",
    "phép",
    "cấp",
    "đề",
    "nghị",
    "thôn",
    "xã",
    "phường",
    "huyện",
    "tỉnh",
    "hộ",
    "khẩu",
    "kết",
    "hôn",
    "khai",
    "sinh",
];

/// Vietnamese syllables written only with Latin-1 letters (no character above U+00FF).
const LATIN1_SYLLABLES: &[&str] = &[
    "Lê", "Thu", "Hà", "Tâm", "Lý", "Hòa", "Tú", "Vân", "Trâm", "Châu", "Tô", "Mã", "Trà", "Giang",
    "Quân", "Thân", "Tôn", "Võ", "Hoàn", "Tuân", "Xuân", "Chí", "Minh", "Anh", "Lâm", "Thái",
    "Hào", "Tài", "Toàn", "Sáng", "Nhàn", "Cúc", "Mê", "Kha", "Thông", "Bá", "Lò", "Tiên", "Yên",
    "Vì", "Hiên", "Nhã",
];

fn tcvn3_encode(text: &str) -> String {
    text.chars().map(|c| tcvn3_code(c).unwrap_or(c)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn never_panics_and_emits_clean_text(raw in messy_dossier()) {
        let tables = MappingTables::from_toml_str(TABLES).expect("valid tables");
        let normalized = normalize_bytes(&raw, &tables, now());
        for payload in payload_strings(&normalized) {
            let mut strings = Vec::new();
            each_string(&payload, &mut strings);
            strings.iter().for_each(|text| assert_clean_text(text));
        }
        if let Outcome::Rejected(findings) = &normalized.outcome {
            prop_assert!(!findings.is_empty(), "a rejection without a reason");
        }
    }

    #[test]
    fn normalizing_twice_gives_identical_bytes(raw in messy_dossier()) {
        let tables = MappingTables::from_toml_str(TABLES).expect("valid tables");
        let first = normalize_bytes(&raw, &tables, now());
        let second = normalize_bytes(&raw, &tables, now());
        match (&first.outcome, &second.outcome) {
            (Outcome::Dossier(a), Outcome::Dossier(b)) => {
                prop_assert_eq!(&a.payload, &b.payload);
                prop_assert_eq!(&a.hash, &b.hash);
            }
            (Outcome::Rejected(a), Outcome::Rejected(b)) => prop_assert_eq!(a, b),
            (Outcome::Skipped(a), Outcome::Skipped(b)) => prop_assert_eq!(a, b),
            _ => prop_assert!(false, "different outcomes"),
        }
        prop_assert_eq!(&first.warnings, &second.warnings);
    }

    #[test]
    fn cleaned_text_is_clean_and_stable(raw in messy_string()) {
        let once = clean(&raw, Some(200));
        assert_clean_text(&once.text);
        prop_assert!(once.text.chars().count() <= 200);
        // Cleaning clean text changes nothing, unless either pass decoded TCVN3: the first pass's output
        // may in principle look like TCVN3 again, and removing invisible characters can uncover a word
        // that reads as TCVN3 (U+00AD is TCVN3's `ư`, so detection runs before the soft hyphen goes:
        // "Î\t\u{ad}Y" is not decoded, "Î Y" may be).
        let twice = clean(&once.text, Some(200));
        if !once.converted && !twice.converted {
            prop_assert_eq!(&twice.text, &once.text);
        }
    }

    #[test]
    fn tcvn3_names_convert_back(words in prop::collection::vec(prop::sample::select(NAME_SYLLABLES), 2..6)) {
        let original = words.join(" ");
        let encoded = tcvn3_encode(&original);
        // Only legacy text that does not itself read as Vietnamese is expected to convert.
        prop_assume!(count_syllables(&encoded) < count_syllables(&original));
        let cleaned = clean(&encoded, None);
        prop_assert!(cleaned.converted, "{} not converted", encoded);
        prop_assert_eq!(cleaned.text, original);
    }

    #[test]
    fn latin1_vietnamese_is_never_converted(words in prop::collection::vec(prop::sample::select(LATIN1_SYLLABLES), 1..6)) {
        let original = words.join(" ");
        prop_assert!(original.chars().all(|c| u32::from(c) <= 0xFF), "not Latin-1 only");
        let cleaned = clean(&original, None);
        prop_assert!(!cleaned.converted, "{} converted to {}", original, cleaned.text);
        prop_assert_eq!(cleaned.text, original);
    }
}
