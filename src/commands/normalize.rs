//! `tthc-sync normalize [FILE|-] [--config FILE] [--show-personal-data]`: what the daemon would send for
//! one source record or a JSON array of them, or why it would not. How an operator answers "why was this
//! dossier refused?", and how the normalization rules can be checked from outside the code.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::{Map, Value, json};

use crate::config::Settings;
use crate::normalize::codes::{message_en, message_vi};
use crate::normalize::{MappingTables, Normalized, Outcome, normalize_bytes};
use crate::privacy;

#[derive(Args, Debug)]
pub struct NormalizeArgs {
    /// A file holding one SourceDossier or a JSON array of them; `-` or nothing reads standard input.
    pub input: Option<PathBuf>,
    /// The daemon's configuration, for its mapping tables (`mapping.tables_file`).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The mapping tables file directly (instead of, or overriding, the configuration's).
    #[arg(long)]
    pub tables: Option<PathBuf>,
    /// Print personal data in clear: the payload printed is then byte for byte what the daemon sends.
    #[arg(long)]
    pub show_personal_data: bool,
}

/// Portal fields that carry personal data (mapping.md, Personal data), masked unless asked otherwise.
const PERSONAL_FIELDS: &[&str] = &[
    "ChuHoSo",
    "SoGiayToChuHoSo",
    "SoDinhDanh",
    "MaDoiTuong",
    "SoDienThoai",
    "Email",
    "Fax",
    "TrichYeuHoSo",
    "GhiChu",
    "TenTepDinhKem",
    "TenGiayTo",
    "NoiDungBoSung",
    "NguoiYeuCauBoSung",
];

pub fn run(args: NormalizeArgs) -> anyhow::Result<ExitCode> {
    let tables_path = match (&args.tables, &args.config) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(config)) => Settings::load(Some(config))?.mapping.tables_file,
        (None, None) => None,
    };
    let tables = match &tables_path {
        Some(path) => MappingTables::load(path)
            .with_context(|| format!("failed to read the mapping tables {}", path.display()))?,
        None => MappingTables::default(),
    };
    let mut text = Vec::new();
    match args.input.as_deref() {
        None => std::io::stdin().read_to_end(&mut text)?,
        Some(path) if path.as_os_str() == "-" => std::io::stdin().read_to_end(&mut text)?,
        Some(path) => {
            text = std::fs::read(path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            text.len()
        }
    };
    let input: Value = serde_json::from_slice(&text).context("the input is not JSON")?;
    let records = match input {
        Value::Array(records) => records,
        single => vec![single],
    };
    let now = jiff::Timestamp::now();
    let results: Vec<Value> = records
        .iter()
        .map(|record| {
            let raw = serde_json::to_vec(record).unwrap_or_default();
            describe(
                &normalize_bytes(&raw, &tables, now),
                args.show_personal_data,
            )
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&Value::Array(results))?;
    text.push('\n');
    // A reader that stops early (`| head`) is not an error of ours.
    match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// One result object, as the README documents it.
pub fn describe(normalized: &Normalized, show_personal_data: bool) -> Value {
    let mut out = Map::new();
    out.insert("source_id".into(), json!(normalized.source_id));
    let rejections = match &normalized.outcome {
        Outcome::Dossier(dossier) => {
            out.insert("outcome".into(), json!("dossier"));
            // The payload's own bytes, parsed back: field order and number formats as sent.
            let mut payload: Value =
                serde_json::from_slice(&dossier.payload).unwrap_or(Value::Null);
            let mut progress: Vec<Value> = dossier
                .progress
                .iter()
                .map(|entry| serde_json::from_slice(&entry.payload).unwrap_or(Value::Null))
                .collect();
            if !show_personal_data {
                mask_personal(&mut payload);
                progress.iter_mut().for_each(mask_personal);
            }
            out.insert("dossier".into(), payload);
            out.insert("progress".into(), Value::Array(progress));
            Vec::new()
        }
        Outcome::Rejected(findings) => {
            out.insert("outcome".into(), json!("rejected"));
            out.insert("progress".into(), json!([]));
            findings.clone()
        }
        Outcome::Skipped(reason) => {
            out.insert("outcome".into(), json!("skipped"));
            out.insert("reason".into(), json!(reason.code()));
            out.insert("progress".into(), json!([]));
            Vec::new()
        }
    };
    let rejections: Vec<Value> = rejections
        .iter()
        .map(|finding| {
            json!({
                "code": finding.code,
                "field": finding.field,
                "message_vi": message_vi(finding.code),
                "message_en": message_en(finding.code),
                "value": finding.value,
            })
        })
        .collect();
    out.insert("rejections".into(), Value::Array(rejections));
    let warnings: Vec<Value> = normalized
        .warnings
        .iter()
        .map(|finding| json!({"code": finding.code, "field": finding.field}))
        .collect();
    out.insert("warnings".into(), Value::Array(warnings));
    Value::Object(out)
}

/// Masks the personal fields of a portal object (and of the objects in its lists) in place.
fn mask_personal(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                match field {
                    Value::String(text) if PERSONAL_FIELDS.contains(&key.as_str()) => {
                        *text = privacy::mask_field(key, text);
                    }
                    other => mask_personal(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_personal),
        _ => {}
    }
}
