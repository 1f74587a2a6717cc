//! Collects the rejections and warnings of one record while it is normalized, and applies the text and
//! date rules field by field so that every finding names its field and masks its value.

use std::fmt;

use crate::privacy::mask_field;
use crate::source::wire::RawDate;

use super::Finding;
use super::codes;
use super::dates::SourceTime;
use super::text;

/// A source field path, built only when a finding needs it (`summary`, `history[2].content`).
#[derive(Debug, Clone, Copy)]
pub enum Field {
    Top(&'static str),
    Item(&'static str, usize, &'static str),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Top(name) => f.write_str(name),
            Field::Item(list, index, name) => write!(f, "{list}[{index}].{name}"),
        }
    }
}

/// A value shown in a finding is cut to this many characters (after masking), so that a huge bad value
/// does not flood reports.
const MAX_SHOWN_VALUE: usize = 80;

#[derive(Debug, Default)]
pub struct Collector {
    pub rejections: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

fn finding(code: &'static str, field: Field, detail: String, value: Option<&str>) -> Finding {
    let field = field.to_string();
    let value = value.map(|value| {
        let masked = mask_field(&field, value);
        match masked.char_indices().nth(MAX_SHOWN_VALUE) {
            Some((cut, _)) => format!("{}…", &masked[..cut]),
            None => masked,
        }
    });
    Finding {
        code,
        field,
        detail,
        value,
    }
}

impl Collector {
    /// Records a rejection; `detail` must not hold personal data (values go in `value`, masked here).
    pub fn reject(
        &mut self,
        code: &'static str,
        field: Field,
        detail: impl Into<String>,
        value: Option<&str>,
    ) {
        self.rejections
            .push(finding(code, field, detail.into(), value));
    }

    /// Records a warning; same rules as [`Collector::reject`].
    pub fn warn(
        &mut self,
        code: &'static str,
        field: Field,
        detail: impl Into<String>,
        value: Option<&str>,
    ) {
        self.warnings
            .push(finding(code, field, detail.into(), value));
    }

    /// Applies the text rule to an optional value; empty after cleaning counts as absent.
    pub fn text(
        &mut self,
        field: Field,
        raw: Option<&str>,
        limit: Option<usize>,
    ) -> Option<String> {
        let raw = raw?;
        let cleaned = text::clean(raw, limit);
        if cleaned.converted {
            self.warn(
                codes::TCVN3_CONVERTED,
                field,
                "decoded from TCVN3 (ABC) read as Latin-1",
                None,
            );
        }
        if cleaned.truncated {
            let detail = format!("longer than {} characters, cut", limit.unwrap_or_default());
            self.warn(codes::TEXT_TRUNCATED, field, detail, None);
        }
        if cleaned.invalid {
            self.reject(
                codes::INVALID_TEXT,
                field,
                "holds replacement characters (U+FFFD) or non-characters after cleaning",
                Some(&cleaned.text),
            );
        }
        (!cleaned.text.is_empty()).then_some(cleaned.text)
    }

    /// Like [`Collector::text`], with `missing_field` when the value is absent or empty.
    pub fn required_text(
        &mut self,
        field: Field,
        raw: Option<&str>,
        limit: Option<usize>,
    ) -> Option<String> {
        let value = self.text(field, raw, limit);
        if value.is_none() {
            self.reject(
                codes::MISSING_FIELD,
                field,
                "required and absent or empty",
                None,
            );
        }
        value
    }

    /// Applies the date rule; absent (or blank) is `None` without a finding, unparseable is `invalid_date`.
    pub fn date(&mut self, field: Field, raw: Option<&RawDate>) -> Option<SourceTime> {
        let raw = raw?;
        if let RawDate::Text(text) = raw
            && text.trim().is_empty()
        {
            return None;
        }
        let parsed = SourceTime::parse(raw);
        if parsed.is_none() {
            let shown = match raw {
                RawDate::Text(text) => text.to_owned_string(),
                RawDate::Millis(millis) => millis.to_string(),
                RawDate::Float(millis) => millis.to_string(),
            };
            self.reject(
                codes::INVALID_DATE,
                field,
                "not a date in any shape the source uses",
                Some(&shown),
            );
        }
        parsed
    }
}
