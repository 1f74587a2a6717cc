//! Applicant contact details and identifiers (mapping.md, Fields): phone numbers with the 2018 prefix
//! conversion, e-mail, identity number, tax code. Each parses into a newtype or is dropped with a warning.

use crate::source::wire::LenientString;

/// A Vietnamese phone number in its 2018 form: a 10-digit mobile (`0[35789]` + 8 digits) or an 11-digit
/// landline (`02` + 9 digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses a phone field as typed (mapping.md, `SoDienThoai`): where it holds several numbers
    /// separated by `/`, `;` or `,`, the first valid one; see [`PhoneNumber::parse_one`] for each.
    pub fn parse(raw: &str) -> Option<PhoneNumber> {
        raw.split(['/', ';', ',']).find_map(PhoneNumber::parse_one)
    }

    /// One number: a leading label dropped (letters, `.`, `:` and spaces before the first digit or `+`:
    /// `ĐT: 0912 345 678`, `SĐT 0912345678`, `Tel.+84…`), then its digits only, `+84`/`84`/`0084` read as
    /// `0`, retired 11-digit mobile prefixes converted.
    fn parse_one(raw: &str) -> Option<PhoneNumber> {
        let number = raw.trim_start_matches(|character: char| {
            character.is_alphabetic() || character.is_whitespace() || matches!(character, '.' | ':')
        });
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        let national = if let Some(rest) = digits.strip_prefix("0084") {
            format!("0{rest}")
        } else if let Some(rest) = digits
            .strip_prefix("84")
            .filter(|rest| rest.len() == 9 || rest.len() == 10)
        {
            format!("0{rest}")
        } else {
            digits
        };
        let converted = convert_retired_prefix(&national).unwrap_or(national);
        is_valid_phone(&converted).then_some(PhoneNumber(converted))
    }

    /// Parses a value that may have arrived as a JSON number, which has lost its leading zero.
    pub fn parse_lenient(raw: &LenientString) -> Option<PhoneNumber> {
        match raw {
            LenientString::Text(text) => PhoneNumber::parse(text),
            LenientString::Number(number) => {
                let digits = number.to_string();
                PhoneNumber::parse(&digits).or_else(|| PhoneNumber::parse(&format!("0{digits}")))
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The mobile prefixes retired in 2018 (11 digits) and the 10-digit prefixes that replaced them.
const RETIRED_PREFIXES: [(&str, &str); 21] = [
    ("0162", "032"),
    ("0163", "033"),
    ("0164", "034"),
    ("0165", "035"),
    ("0166", "036"),
    ("0167", "037"),
    ("0168", "038"),
    ("0169", "039"),
    ("0120", "070"),
    ("0121", "079"),
    ("0122", "077"),
    ("0126", "076"),
    ("0128", "078"),
    ("0123", "083"),
    ("0124", "084"),
    ("0125", "085"),
    ("0127", "081"),
    ("0129", "082"),
    ("0186", "056"),
    ("0188", "058"),
    ("0199", "059"),
];

fn convert_retired_prefix(digits: &str) -> Option<String> {
    if digits.len() != 11 {
        return None;
    }
    RETIRED_PREFIXES
        .iter()
        .find_map(|(old, new)| digits.strip_prefix(old).map(|rest| format!("{new}{rest}")))
}

fn is_valid_phone(digits: &str) -> bool {
    let bytes = digits.as_bytes();
    if !bytes.iter().all(u8::is_ascii_digit) {
        return false;
    }
    match bytes {
        [b'0', b'3' | b'5' | b'7' | b'8' | b'9', ..] => bytes.len() == 10,
        [b'0', b'2', ..] => bytes.len() == 11,
        _ => false,
    }
}

/// An e-mail address of the shape `local@domain.tld`, its domain lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Option<Email> {
        let trimmed = raw.trim();
        let (local, domain) = trimmed.rsplit_once('@')?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && local.chars().all(|c| {
                !c.is_whitespace() && !c.is_control() && !matches!(c, '@' | ',' | ';' | '<' | '>')
            });
        if !local_ok || domain.len() > 253 {
            return None;
        }
        let domain = domain.to_ascii_lowercase();
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |label: &&str| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        let tld_ok = labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
        (labels.len() >= 2 && labels.iter().all(label_ok) && tld_ok)
            .then(|| Email(format!("{local}@{domain}")))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The kind of an identity document, as the portal codes it in `LoaiDinhDanh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    /// Citizen identity card (CCCD), 12 digits: "1".
    CitizenCard,
    /// Old identity card (CMND), 9 digits: "2".
    OldIdentityCard,
}

impl IdentityKind {
    pub fn portal_code(self) -> &'static str {
        match self {
            IdentityKind::CitizenCard => "1",
            IdentityKind::OldIdentityCard => "2",
        }
    }
}

/// An identity number: 12 digits (CCCD) or 9 digits (CMND).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityNumber {
    digits: String,
    kind: IdentityKind,
}

impl IdentityNumber {
    pub fn parse(raw: &str) -> Option<IdentityNumber> {
        let digits: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let kind = match digits.len() {
            12 => IdentityKind::CitizenCard,
            9 => IdentityKind::OldIdentityCard,
            _ => return None,
        };
        Some(IdentityNumber { digits, kind })
    }

    /// A number typed into a numeric column loses its leading zeros; a CCCD always has 12 digits and
    /// starts with a zero-padded province code, so 10 or 11 digits from a JSON number are padded back.
    pub fn parse_lenient(raw: &LenientString) -> Option<IdentityNumber> {
        match raw {
            LenientString::Text(text) => IdentityNumber::parse(text),
            LenientString::Number(number) => {
                let digits = number.to_string();
                match digits.len() {
                    10 | 11 => IdentityNumber::parse(&format!("{digits:0>12}")),
                    _ => IdentityNumber::parse(&digits),
                }
            }
        }
    }

    pub fn digits(&self) -> &str {
        &self.digits
    }

    pub fn kind(&self) -> IdentityKind {
        self.kind
    }
}

/// A tax code: 10 digits, 10 digits-3 digits (a branch), or a 12-digit personal identification number
/// (individuals and household businesses since 1 July 2025). Spaces are removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxCode(String);

impl TaxCode {
    pub fn parse(raw: &str) -> Option<TaxCode> {
        let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        let all_digits = |text: &str| text.bytes().all(|b| b.is_ascii_digit());
        let valid = match compact.split_once('-') {
            Some((main, branch)) => {
                main.len() == 10 && branch.len() == 3 && all_digits(main) && all_digits(branch)
            }
            None => (compact.len() == 10 || compact.len() == 12) && all_digits(&compact),
        };
        valid.then_some(TaxCode(compact))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(raw: &str) -> Option<String> {
        PhoneNumber::parse(raw).map(PhoneNumber::into_string)
    }

    #[test]
    fn converts_every_retired_prefix() {
        for (old, new) in RETIRED_PREFIXES {
            assert_eq!(
                phone(&format!("{old}2345678")),
                Some(format!("{new}2345678")),
                "{old}"
            );
        }
        assert_eq!(phone("+84 162 345 6789"), Some("0323456789".into()));
        assert_eq!(phone("84 1663456789"), Some("0363456789".into()));
        assert_eq!(phone("0084 912 345 678"), Some("0912345678".into()));
    }

    #[test]
    fn keeps_current_mobiles_and_landlines() {
        assert_eq!(phone("0912345678"), Some("0912345678".into()));
        assert_eq!(phone("0243 8123 456"), Some("02438123456".into()));
        assert_eq!(phone("(028) 3823-4567"), Some("02838234567".into()));
        assert_eq!(phone("+84912345678"), Some("0912345678".into()));
    }

    #[test]
    fn drops_a_leading_label() {
        for labelled in [
            "ĐT: 0912 345 678",
            "SĐT 0912345678",
            "Tel.+84 912 345 678",
            "Điện thoại: 0912.345.678",
            "DĐ:0912345678",
            "  sdt  0912-345-678",
        ] {
            assert_eq!(phone(labelled), Some("0912345678".into()), "{labelled}");
        }
    }

    #[test]
    fn keeps_the_first_valid_of_several_numbers() {
        assert_eq!(phone("0912345678 / 0987654321"), Some("0912345678".into()));
        assert_eq!(phone("0912 345; 0987 654 321"), Some("0987654321".into()));
        assert_eq!(
            phone("DĐ: 01663456789, CQ: 0243 8123 456"),
            Some("0363456789".into())
        );
        assert_eq!(
            phone("NR: 0243 812 34, DĐ 0987.654.321"),
            Some("0987654321".into())
        );
        assert_eq!(phone("0912 / 0987"), None);
    }

    #[test]
    fn drops_what_cannot_be_repaired() {
        for bad in [
            "0912 345",
            "0112345678",
            "091234567a",
            "0912345678 0987654321",
            "ĐT",
            "",
            "0161234567",
            "01712345678",
            "09123456789",
        ] {
            assert_eq!(phone(bad), None, "{bad}");
        }
    }

    #[test]
    fn restores_leading_zero_of_numeric_phones() {
        let number = LenientString::Number(912345678.into());
        assert_eq!(
            PhoneNumber::parse_lenient(&number).map(PhoneNumber::into_string),
            Some("0912345678".into())
        );
    }

    #[test]
    fn emails() {
        let email = |raw: &str| Email::parse(raw).map(Email::into_string);
        assert_eq!(
            email("  Hoa.Nguyen@Example.VN "),
            Some("Hoa.Nguyen@example.vn".into())
        );
        for bad in [
            "hoa@",
            "@example.vn",
            "hoa@example",
            "hoa example@x.vn",
            "hoa@ex_ample.vn",
            "hoa@example.v",
        ] {
            assert_eq!(email(bad), None, "{bad}");
        }
    }

    #[test]
    fn identity_numbers() {
        assert_eq!(
            IdentityNumber::parse("008185001234").map(|id| id.kind()),
            Some(IdentityKind::CitizenCard)
        );
        assert_eq!(
            IdentityNumber::parse("123456789").map(|id| id.kind()),
            Some(IdentityKind::OldIdentityCard)
        );
        assert_eq!(IdentityNumber::parse("12345"), None);
        assert_eq!(IdentityNumber::parse("00818500123A"), None);
        let numeric = LenientString::Number(8185001234u64.into());
        assert_eq!(
            IdentityNumber::parse_lenient(&numeric).map(|id| id.digits().to_owned()),
            Some("008185001234".into())
        );
    }

    #[test]
    fn tax_codes() {
        let tax = |raw: &str| TaxCode::parse(raw).map(TaxCode::into_string);
        assert_eq!(tax("0101234567-001"), Some("0101234567-001".into()));
        assert_eq!(tax("0101 234 567"), Some("0101234567".into()));
        assert_eq!(tax("008185001234"), Some("008185001234".into()));
        assert_eq!(tax("0101234567-01"), None);
        assert_eq!(tax("12345"), None);
    }
}
