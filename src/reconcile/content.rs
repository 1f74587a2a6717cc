//! The content check's comparison (pure): does the dossier the portal holds (TraCuuHoSo) carry every
//! field of the payload the ledger says it accepted, with the same value?
//!
//! The portal may add fields of its own (`NgayCapNhat`, the time of the last sync), so only our fields
//! are compared, at every level of nesting. Numbers that are codes may come back as strings or as
//! numbers (portal-api.md: `"2"` and `2` are the same code), so a string and a number are equal when
//! they name the same number. A field of ours the portal lacks is a difference; so is a list of another
//! length. The answer names the first differing field by its path, never its values: the path goes to
//! logs, the values are personal data.

use serde_json::Value;

/// How much a run compares (`reconcile.content_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentLimits {
    /// Every dossier accepted within this many hours; 0 none.
    pub recent_hours: u64,
    /// Older accepted dossiers per unit, at random.
    pub sample_per_unit: usize,
    /// The most lookups of one run; 0 turns the check off.
    pub budget: usize,
}

impl ContentLimits {
    /// No content check at all.
    pub const OFF: ContentLimits = ContentLimits {
        recent_hours: 0,
        sample_per_unit: 0,
        budget: 0,
    };

    /// How the budget splits between the recent dossiers and the samples of `units` units: the samples
    /// keep at most half of it, so that a busy day's recent dossiers cannot crowd them out, nor they the
    /// recent ones. Returns (recent, samples).
    pub fn split(&self, units: usize) -> (usize, usize) {
        let samples = self
            .sample_per_unit
            .saturating_mul(units)
            .min(self.budget / 2);
        let recent = if self.recent_hours == 0 {
            0
        } else {
            self.budget - samples
        };
        (recent, self.budget - recent)
    }
}

/// The path of the first field of `ours` that `theirs` does not hold with the same value
/// (`TaiLieuNop[1].TenTepDinhKem`), or `None` when the portal holds all of our payload.
pub fn first_difference(ours: &Value, theirs: &Value) -> Option<String> {
    let mut path = String::new();
    differs(ours, theirs, &mut path).then_some(path)
}

fn differs(ours: &Value, theirs: &Value, path: &mut String) -> bool {
    match (ours, theirs) {
        (Value::Object(ours), Value::Object(theirs)) => {
            for (key, value) in ours {
                let length = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                let different = match theirs.get(key) {
                    Some(other) => differs(value, other, path),
                    // We never send a null; if we did, the portal leaving the field out is the same.
                    None => !value.is_null(),
                };
                if different {
                    return true;
                }
                path.truncate(length);
            }
            false
        }
        (Value::Array(ours), Value::Array(theirs)) => {
            if ours.len() != theirs.len() {
                return true;
            }
            for (index, (value, other)) in ours.iter().zip(theirs).enumerate() {
                let length = path.len();
                path.push_str(&format!("[{index}]"));
                if differs(value, other, path) {
                    return true;
                }
                path.truncate(length);
            }
            false
        }
        (Value::Number(number), Value::String(text))
        | (Value::String(text), Value::Number(number)) => !same_number(number, text),
        (Value::Number(a), Value::Number(b)) => a.as_f64() != b.as_f64(),
        (ours, theirs) => ours != theirs,
    }
}

/// A number and its text are the same code or amount: `2` and `"2"`, `150000` and `"150000"`.
fn same_number(number: &serde_json::Number, text: &str) -> bool {
    let text = text.trim();
    if let (Some(whole), Ok(parsed)) = (number.as_i64(), text.parse::<i64>()) {
        return whole == parsed;
    }
    match (number.as_f64(), text.parse::<f64>()) {
        (Some(value), Ok(parsed)) => value == parsed,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// (what we sent, what the portal holds, the differing field or none).
    fn cases() -> Vec<(Value, Value, Option<&'static str>)> {
        vec![
            // The portal's own field is not ours to compare.
            (
                json!({"MaHoSo": "X-1", "TrangThaiHoSo": "4"}),
                json!({"MaHoSo": "X-1", "TrangThaiHoSo": "4", "NgayCapNhat": "20261130080000"}),
                None,
            ),
            // Codes as numbers or strings, both ways.
            (
                json!({"TrangThaiHoSo": "4", "KenhThucHien": 2}),
                json!({"TrangThaiHoSo": 4, "KenhThucHien": "2"}),
                None,
            ),
            (
                json!({"DanhSachLePhi": [{"Gia": 150000, "MaPhiLePhi": "LP1"}]}),
                json!({"DanhSachLePhi": [{"Gia": "150000", "MaPhiLePhi": "LP1", "Them": "x"}]}),
                None,
            ),
            // A number-as-string that names another number differs.
            (
                json!({"TrangThaiHoSo": "4"}),
                json!({"TrangThaiHoSo": 9}),
                Some("TrangThaiHoSo"),
            ),
            (
                json!({"DanhSachLePhi": [{"Gia": 150000}]}),
                json!({"DanhSachLePhi": [{"Gia": "15000o"}]}),
                Some("DanhSachLePhi[0].Gia"),
            ),
            // A field of ours the portal lacks.
            (
                json!({"MaHoSo": "X-1", "NgayTra": "20261130080000"}),
                json!({"MaHoSo": "X-1"}),
                Some("NgayTra"),
            ),
            // Another value.
            (
                json!({"MaHoSo": "X-1", "ChuHoSo": "Nguyễn Văn A"}),
                json!({"MaHoSo": "X-1", "ChuHoSo": "Nguyễn Văn B"}),
                Some("ChuHoSo"),
            ),
            // A list of another length, or with another element.
            (
                json!({"TaiLieuNop": [{"TepDinhKemId": "1"}, {"TepDinhKemId": "2"}]}),
                json!({"TaiLieuNop": [{"TepDinhKemId": "1"}]}),
                Some("TaiLieuNop"),
            ),
            (
                json!({"TaiLieuNop": [{"TepDinhKemId": "1"}, {"TepDinhKemId": "2"}]}),
                json!({"TaiLieuNop": [{"TepDinhKemId": "1"}, {"TepDinhKemId": "3"}]}),
                Some("TaiLieuNop[1].TepDinhKemId"),
            ),
            // Another type altogether.
            (
                json!({"TaiLieuNop": []}),
                json!({"TaiLieuNop": "[]"}),
                Some("TaiLieuNop"),
            ),
            (
                json!({"GhiChu": "1"}),
                json!({"GhiChu": true}),
                Some("GhiChu"),
            ),
            // Text is compared exactly: "04" is not "4" as text.
            (
                json!({"MaHoSo": "04"}),
                json!({"MaHoSo": "4"}),
                Some("MaHoSo"),
            ),
        ]
    }

    #[test]
    fn the_portal_must_hold_every_field_of_ours() {
        for (ours, theirs, expected) in cases() {
            assert_eq!(
                first_difference(&ours, &theirs).as_deref(),
                expected,
                "ours {ours} against the portal's {theirs}"
            );
        }
    }

    #[test]
    fn the_budget_keeps_room_for_the_samples() {
        let limits = ContentLimits {
            recent_hours: 48,
            sample_per_unit: 5,
            budget: 2000,
        };
        assert_eq!(limits.split(10), (1950, 50));
        assert_eq!(limits.split(1000), (1000, 1000));
        let no_recent = ContentLimits {
            recent_hours: 0,
            ..limits
        };
        assert_eq!(no_recent.split(10), (0, 2000));
        assert_eq!(ContentLimits::OFF.split(10), (0, 0));
    }

    #[test]
    fn a_payload_equals_itself_plus_the_portal_s_fields() {
        let ours = json!({"MaHoSo": "X-1", "DanhSachLePhi": [{"Gia": 1}], "DinhDanhCHS": []});
        let mut theirs = ours.clone();
        theirs["NgayCapNhat"] = json!("20261130080000");
        assert_eq!(first_difference(&ours, &ours), None);
        assert_eq!(first_difference(&ours, &theirs), None);
        // The other way round the portal's extra field is a field we lack: the check is one-sided.
        assert_eq!(
            first_difference(&theirs, &ours).as_deref(),
            Some("NgayCapNhat")
        );
    }
}
