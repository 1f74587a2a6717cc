//! Serde shapes of the provincial one-stop system's JSON (`../shared/spec/source-api.md`).
//!
//! These are wire types, deliberately lenient where the source is known to be loose (dates in several
//! shapes, numbers as strings): the normalizer, not serde, decides what a value means. A record that does
//! not fit even these shapes is a `malformed_record` rejection, never an error that stops a page.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A Spring page as the source answers it. `content` is kept raw so that one malformed record does not
/// spoil the page: each record is parsed on its own.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPage {
    /// Absent on a faulty answer (source-api.md quirk 9): the reader treats that as a transport error.
    pub content: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    pub number: Option<i64>,
    #[serde(default)]
    pub size: Option<i64>,
    #[serde(default)]
    pub total_elements: Option<i64>,
    #[serde(default)]
    pub total_pages: Option<i64>,
    #[serde(default)]
    pub last: Option<bool>,
}

/// The most entries one list of a record may hold (`fees`, `attachments`, `supplements`, `history`). A
/// real dossier has tens. A record with more is a `malformed_record` naming the list: a few megabytes of
/// `{}` entries under `source.max_record_bytes` must not become gigabytes of parsed entries (source-api.md
/// quirk 14).
pub const MAX_LIST_ENTRIES: usize = 10_000;

/// Reads an optional list of at most [`MAX_LIST_ENTRIES`] entries, failing as soon as one more arrives.
fn bounded_list<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Bounded<T> {
        type Value = Option<Vec<T>>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(
                formatter,
                "a list of at most {MAX_LIST_ENTRIES} entries, or null"
            )
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_seq(self)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut entries: A,
        ) -> Result<Self::Value, A::Error> {
            let mut list = Vec::with_capacity(entries.size_hint().unwrap_or(0).min(64));
            while let Some(entry) = entries.next_element()? {
                if list.len() == MAX_LIST_ENTRIES {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_LIST_ENTRIES} entries"
                    )));
                }
                list.push(entry);
            }
            Ok(Some(list))
        }
    }

    deserializer.deserialize_option(Bounded(std::marker::PhantomData))
}

/// A typed Spring page, for the catalogs and identifier listings.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub content: Vec<T>,
    pub number: i64,
    pub size: i64,
    pub total_elements: i64,
    pub total_pages: i64,
    pub last: bool,
}

/// The fields the feed reader needs from every record, even a malformed one.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordHeader<'a> {
    #[serde(borrow)]
    pub id: Option<LenientString<'a>>,
    #[serde(borrow)]
    pub updated_date: Option<RawDate<'a>>,
}

/// A string of a record, borrowed from the record's bytes when it has no escapes (most do not) and owned
/// when serde_json had to unescape it. Parsing a record allocated one `String` per field before; borrowing
/// them was the largest single saving in normalization's profile.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SourceStr<'a>(pub Cow<'a, str>);

impl SourceStr<'_> {
    /// The value as an owned `String` (a copy when it is borrowed).
    pub fn to_owned_string(&self) -> String {
        self.0.as_ref().to_owned()
    }
}

impl std::ops::Deref for SourceStr<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SourceStr<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.0.as_ref(), formatter)
    }
}

impl From<&str> for SourceStr<'_> {
    fn from(text: &str) -> Self {
        SourceStr(Cow::Owned(text.to_owned()))
    }
}

impl From<String> for SourceStr<'_> {
    fn from(text: String) -> Self {
        SourceStr(Cow::Owned(text))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for SourceStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SourceStr<'de>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                value: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(SourceStr(Cow::Borrowed(value)))
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                Ok(SourceStr(Cow::Owned(value.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Self::Value, E> {
                Ok(SourceStr(Cow::Owned(value)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// One dossier as the source serves it (source-api.md section 5). Its strings borrow from the record's
/// bytes ([`SourceStr`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceDossier<'a> {
    #[serde(borrow)]
    pub id: SourceStr<'a>,
    #[serde(default, borrow)]
    pub code: Option<SourceStr<'a>>,
    #[serde(default, borrow)]
    pub procedure: Option<ProcedureRef<'a>>,
    #[serde(default, borrow)]
    pub agency: Option<AgencyRef<'a>>,
    #[serde(default, borrow)]
    pub apply_method: Option<CodeName<'a>>,
    #[serde(default, borrow)]
    pub applicant: Option<Applicant<'a>>,
    #[serde(default, borrow)]
    pub summary: Option<SourceStr<'a>>,
    #[serde(default, borrow)]
    pub submitted_date: Option<RawDate<'a>>,
    #[serde(default, borrow)]
    pub accepted_date: Option<RawDate<'a>>,
    #[serde(default, borrow)]
    pub appointment_date: Option<RawDate<'a>>,
    #[serde(default, borrow)]
    pub completed_date: Option<RawDate<'a>>,
    #[serde(default, borrow)]
    pub returned_date: Option<RawDate<'a>>,
    #[serde(default, borrow)]
    pub rejected_date: Option<RawDate<'a>>,
    #[serde(default, borrow)]
    pub dossier_status: Option<CodeName<'a>>,
    #[serde(default, borrow)]
    pub return_method: Option<CodeName<'a>>,
    #[serde(default, borrow, deserialize_with = "bounded_list")]
    pub fees: Option<Vec<Fee<'a>>>,
    #[serde(default, borrow, deserialize_with = "bounded_list")]
    pub attachments: Option<Vec<Attachment<'a>>>,
    #[serde(default, borrow, deserialize_with = "bounded_list")]
    pub supplements: Option<Vec<Supplement<'a>>>,
    #[serde(default, borrow, deserialize_with = "bounded_list")]
    pub history: Option<Vec<HistoryEntry<'a>>>,
    #[serde(default)]
    pub vneid_verified: Option<bool>,
    #[serde(default)]
    pub reuses_digitized_components: Option<bool>,
    #[serde(default, borrow)]
    pub note: Option<SourceStr<'a>>,
    #[serde(default, borrow)]
    pub updated_date: Option<RawDate<'a>>,
    #[serde(default, borrow)]
    pub deleted_date: Option<RawDate<'a>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ProcedureRef<'a> {
    #[serde(borrow)]
    pub id: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub code: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub name: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub sector: Option<SectorRef<'a>>,
}

/// A dossier's `procedure.sector` (the catalog's [`Sector`] owns its strings).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SectorRef<'a> {
    #[serde(borrow)]
    pub code: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub name: Option<SourceStr<'a>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Sector {
    pub code: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct AgencyRef<'a> {
    #[serde(borrow)]
    pub id: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub code: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub name: Option<SourceStr<'a>>,
}

/// `{"id": 1, "name": "Trực tuyến"}`: the id may arrive as a number or a numeric string.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CodeName<'a> {
    #[serde(borrow)]
    pub id: Option<LenientInt<'a>>,
    #[serde(borrow)]
    pub name: Option<SourceStr<'a>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Applicant<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub fullname: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub identity_number: Option<LenientString<'a>>,
    #[serde(borrow)]
    pub tax_code: Option<LenientString<'a>>,
    #[serde(borrow)]
    pub phone: Option<LenientString<'a>>,
    #[serde(borrow)]
    pub email: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub address: Option<SourceStr<'a>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Fee<'a> {
    #[serde(borrow)]
    pub code: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub name: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub amount: Option<RawAmount<'a>>,
    pub paid: Option<bool>,
    #[serde(borrow)]
    pub payment_channel: Option<SourceStr<'a>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Attachment<'a> {
    #[serde(borrow)]
    pub id: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub name: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub url: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub component_code: Option<SourceStr<'a>>,
    /// `input` (submitted by the applicant) or `result` (a result document).
    #[serde(borrow)]
    pub kind: Option<SourceStr<'a>>,
    pub digitized: Option<bool>,
    pub reused: Option<bool>,
    pub from_national_repository: Option<bool>,
    /// Result documents may carry the code of the result paper.
    #[serde(borrow)]
    pub result_code: Option<SourceStr<'a>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Supplement<'a> {
    #[serde(borrow)]
    pub id: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub requested_by: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub content: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub requested_at: Option<RawDate<'a>>,
    #[serde(borrow)]
    pub previous_appointment: Option<RawDate<'a>>,
    #[serde(borrow)]
    pub new_appointment: Option<RawDate<'a>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct HistoryEntry<'a> {
    #[serde(borrow)]
    pub actor: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub title: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub department: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub content: Option<SourceStr<'a>>,
    #[serde(borrow)]
    pub status_id: Option<LenientInt<'a>>,
    #[serde(borrow)]
    pub started_at: Option<RawDate<'a>>,
    #[serde(borrow)]
    pub finished_at: Option<RawDate<'a>>,
    #[serde(borrow)]
    pub due_at: Option<RawDate<'a>>,
}

/// A date as the source may write it (source-api.md quirk 5): a string in one of several shapes, or epoch
/// milliseconds as a number.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RawDate<'a> {
    Millis(i64),
    Text(SourceStr<'a>),
    /// A fractional or otherwise odd number; the date rule rejects or truncates it.
    Float(f64),
}

/// A fee amount: `75000`, `75000.0` or `"75.000"` (quirk 7).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RawAmount<'a> {
    Number(serde_json::Number),
    Text(SourceStr<'a>),
}

/// An integer that may arrive as a number or a string of digits.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum LenientInt<'a> {
    Int(i64),
    Text(SourceStr<'a>),
    Float(f64),
}

impl LenientInt<'_> {
    /// The integer value, when there is exactly one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            LenientInt::Int(value) => Some(*value),
            LenientInt::Text(text) => text.trim().parse().ok(),
            LenientInt::Float(value) if value.fract() == 0.0 && value.abs() < 1e15 => {
                Some(*value as i64)
            }
            LenientInt::Float(_) => None,
        }
    }
}

/// A string that a migrated row may carry as a number (phones and ID numbers typed into numeric columns).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum LenientString<'a> {
    Text(SourceStr<'a>),
    Number(serde_json::Number),
}

impl LenientString<'_> {
    pub fn as_text(&self) -> Cow<'_, str> {
        match self {
            LenientString::Text(text) => Cow::Borrowed(text),
            LenientString::Number(number) => Cow::Owned(number.to_string()),
        }
    }
}

/// `GET /ba/agency` items.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgencyItem {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub parent_id: Option<String>,
    #[serde(default)]
    pub deleted: bool,
}

/// `GET /ba/procedure` items.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcedureItem {
    pub id: String,
    pub code: String,
    pub national_code: Option<String>,
    pub name: String,
    pub sector: Sector,
    #[serde(default)]
    pub has_fee: bool,
}

/// `GET /pa/dossier-statistic/count-by-agency` items.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgencyDayCount {
    pub agency_id: String,
    pub date: String,
    pub count: i64,
}

/// `GET /pa/dossier-statistic/ids` items.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DossierIdItem {
    pub id: String,
    pub code: Option<String>,
    pub updated_date: Option<String>,
}

/// `POST /oauth/token` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

// The four lenient scalars above are read with hand-written visitors rather than `#[serde(untagged)]`:
// untagged enums buffer every value and try each variant in turn, which made parsing a record several times
// slower than the rest of normalization together. Each visitor accepts exactly the shapes its enum names.

/// Implements `Deserialize` for a lenient scalar from three conversions: integer, float, string (a
/// [`SourceStr`], borrowed from the record when it can be).
macro_rules! lenient_scalar {
    ($type:ident, $expecting:literal, int: $int:expr, float: $float:expr, text: $text:expr) => {
        impl<'de: 'a, 'a> Deserialize<'de> for $type<'a> {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl<'de> serde::de::Visitor<'de> for Visitor {
                    type Value = $type<'de>;
                    fn expecting(
                        &self,
                        formatter: &mut std::fmt::Formatter<'_>,
                    ) -> std::fmt::Result {
                        formatter.write_str($expecting)
                    }
                    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
                        Ok($int(value))
                    }
                    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
                        match i64::try_from(value) {
                            Ok(value) => Ok($int(value)),
                            Err(_) => Ok($float(value as f64)),
                        }
                    }
                    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Self::Value, E> {
                        Ok($float(value))
                    }
                    fn visit_borrowed_str<E: serde::de::Error>(
                        self,
                        value: &'de str,
                    ) -> Result<Self::Value, E> {
                        Ok($text(SourceStr(Cow::Borrowed(value))))
                    }
                    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
                        Ok($text(SourceStr(Cow::Owned(value.to_owned()))))
                    }
                    fn visit_string<E: serde::de::Error>(
                        self,
                        value: String,
                    ) -> Result<Self::Value, E> {
                        Ok($text(SourceStr(Cow::Owned(value))))
                    }
                }
                deserializer.deserialize_any(Visitor)
            }
        }
    };
}

lenient_scalar!(RawDate, "a date string or epoch milliseconds",
    int: RawDate::Millis, float: RawDate::Float, text: RawDate::Text);
lenient_scalar!(LenientInt, "an integer or a string of digits",
    int: LenientInt::Int, float: LenientInt::Float, text: LenientInt::Text);
lenient_scalar!(LenientString, "a string or a number",
    int: |value: i64| LenientString::Number(value.into()),
    float: |value: f64| serde_json::Number::from_f64(value)
        .map_or_else(|| LenientString::Text(value.to_string().into()), LenientString::Number),
    text: LenientString::Text);
lenient_scalar!(RawAmount, "an amount as a number or a string",
    int: |value: i64| RawAmount::Number(value.into()),
    float: |value: f64| serde_json::Number::from_f64(value)
        .map_or_else(|| RawAmount::Text(value.to_string().into()), RawAmount::Number),
    text: RawAmount::Text);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_longer_than_the_bound_is_refused_naming_the_bound() {
        let at_bound = format!(
            "{{\"id\":\"a\",\"history\":[{}]}}",
            vec!["{}"; MAX_LIST_ENTRIES].join(",")
        );
        let dossier: SourceDossier = serde_json::from_str(&at_bound).unwrap();
        assert_eq!(
            dossier.history.map(|history| history.len()),
            Some(MAX_LIST_ENTRIES)
        );
        let over = format!(
            "{{\"id\":\"a\",\"fees\":null,\"history\":[{}]}}",
            vec!["{}"; MAX_LIST_ENTRIES + 1].join(",")
        );
        let error = serde_json::from_str::<SourceDossier>(&over).unwrap_err();
        assert!(
            error.to_string().contains("more than 10000 entries"),
            "{error}"
        );
        let none: SourceDossier = serde_json::from_str(r#"{"id":"a","fees":null}"#).unwrap();
        assert_eq!(none.fees, None);
        assert!(serde_json::from_str::<SourceDossier>(r#"{"id":"a","fees":"x"}"#).is_err());
    }

    #[test]
    fn lenient_scalars_read_every_shape_and_refuse_the_rest() {
        assert_eq!(
            serde_json::from_str::<RawDate>("1705282200000").unwrap(),
            RawDate::Millis(1705282200000)
        );
        assert_eq!(
            serde_json::from_str::<RawDate>("\"15/01/2024\"").unwrap(),
            RawDate::Text("15/01/2024".into())
        );
        assert_eq!(
            serde_json::from_str::<RawDate>("1.5").unwrap(),
            RawDate::Float(1.5)
        );
        assert!(serde_json::from_str::<RawDate>("{}").is_err());
        assert!(serde_json::from_str::<RawDate>("true").is_err());
        assert_eq!(
            serde_json::from_str::<LenientInt>("\"7\"")
                .unwrap()
                .as_i64(),
            Some(7)
        );
        assert_eq!(
            serde_json::from_str::<LenientString>("912345678")
                .unwrap()
                .as_text(),
            "912345678"
        );
        assert_eq!(
            serde_json::from_str::<RawAmount>("75000.0").unwrap(),
            RawAmount::Number(serde_json::Number::from_f64(75000.0).unwrap())
        );
        assert_eq!(
            serde_json::from_str::<RawAmount>("\"75.000\"").unwrap(),
            RawAmount::Text("75.000".into())
        );
        assert!(serde_json::from_str::<RawAmount>("[1]").is_err());
        // A null in an optional field stays "absent", as before.
        let fee: Fee = serde_json::from_str("{\"amount\": null}").unwrap();
        assert_eq!(fee.amount, None);
    }
}
