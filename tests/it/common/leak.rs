//! The personal-data leak check (mapping.md, Personal data): every personal value of a dataset, in the
//! forms it takes at the source and on the portal, and a check that none of them appears in clear in a
//! text an operator or a machine reads: logs, command output, reports, exports, pages.
//!
//! Reusable: a test collects the values once ([`PersonalData::from_source`], then
//! [`PersonalData::add_portal`]) and calls [`PersonalData::assert_absent`] on every output it produces.

use serde_json::Value;

/// Values shorter than this are not searched for: a short number or name would match by chance.
const MIN_LEN: usize = 8;

#[derive(Debug, Default)]
pub struct PersonalData {
    /// (what it is, the value in clear).
    values: Vec<(&'static str, String)>,
    /// Officials who handled a dossier (`history[].actor`, the portal's NguoiXuLy) are named in the
    /// clear by design; an applicant who shares an official's name cannot be told apart by text, so
    /// such a name is not searched for.
    officials: std::collections::HashSet<String>,
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.trim().to_owned()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

impl PersonalData {
    /// The applicants' names, identity numbers, phones, e-mails and addresses, and the dossiers' free
    /// texts, exactly as the source serves them.
    pub fn from_source<'a>(records: impl IntoIterator<Item = &'a Value>) -> PersonalData {
        let records: Vec<&Value> = records.into_iter().collect();
        let mut data = PersonalData::default();
        let now = jiff::Timestamp::now();
        let tables = tthc_sync::normalize::MappingTables::default();
        data.officials = records
            .iter()
            .filter_map(|record| {
                let raw = record.to_string();
                match tthc_sync::normalize::normalize_bytes(raw.as_bytes(), &tables, now).outcome {
                    tthc_sync::normalize::Outcome::Dossier(dossier) => Some(dossier),
                    _ => None,
                }
            })
            .flat_map(|dossier| dossier.progress)
            .filter_map(|entry| entry.entry.nguoi_xu_ly)
            .collect();
        for record in &records {
            let applicant = &record["applicant"];
            for (kind, field) in [
                ("name", "fullname"),
                ("identity number", "identityNumber"),
                ("phone", "phone"),
                ("e-mail", "email"),
                ("address", "address"),
            ] {
                data.add(kind, &applicant[field]);
            }
            data.add("summary", &record["summary"]);
        }
        data
    }

    /// The same data as the portal received it, normalized (a phone in its 10-digit form, a name
    /// decoded from TCVN3).
    pub fn add_portal<'a>(&mut self, dossiers: impl IntoIterator<Item = &'a Value>) {
        for dossier in dossiers {
            for (kind, field) in [
                ("name", "ChuHoSo"),
                ("identity number", "SoGiayToChuHoSo"),
                ("phone", "SoDienThoai"),
                ("e-mail", "Email"),
                ("summary", "TrichYeuHoSo"),
            ] {
                self.add(kind, &dossier[field]);
            }
        }
    }

    fn add(&mut self, kind: &'static str, value: &Value) {
        if let Some(value) = text(value)
            && value.chars().count() >= MIN_LEN
            && !(kind == "name" && self.officials.contains(&value))
        {
            self.values.push((kind, value));
        }
    }

    /// How many values are searched for (a check over nothing proves nothing).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// The personal values found in `text`, at most `limit` of them. One pass over the text for all
    /// values at once (Aho-Corasick): logs and exports run to megabytes.
    pub fn found_in(&self, text: &str, limit: usize) -> Vec<(&'static str, &str)> {
        let searcher = aho_corasick::AhoCorasick::new(self.values.iter().map(|(_, value)| value))
            .expect("the personal values make a searcher");
        let mut found: Vec<usize> = searcher
            .find_overlapping_iter(text)
            .map(|hit| hit.pattern().as_usize())
            .collect();
        found.sort_unstable();
        found.dedup();
        found
            .into_iter()
            .take(limit)
            .map(|index| (self.values[index].0, self.values[index].1.as_str()))
            .collect()
    }

    /// Fails the test when any personal value appears in clear in `text` (`what` names the output).
    pub fn assert_absent(&self, what: &str, text: &str) {
        assert!(
            self.len() > 0,
            "the leak check has no personal values to look for"
        );
        let found = self.found_in(text, 5);
        if let Some((kind, value)) = found.first() {
            let line: String = text
                .lines()
                .find(|line| line.contains(value))
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            panic!(
                "personal data in clear in {what}: {} value(s), e.g. a {kind} ({value:?}) in: {line}",
                found.len()
            );
        }
    }
}
