//! `tthc-sync normalize [FILE|-] [--config FILE] [--show-personal-data]`: what the daemon would send for
//! one source record or a JSON array of them, or why it would not. How an operator answers "why was this
//! dossier refused?", and how the normalization rules can be checked from outside the code.
//!
//! Each record gets the daemon's verdict, by the daemon's path: bytes that are not UTF-8 are written as
//! `\udcXX` escapes as the source client writes them (the record holding them is held as `invalid_text`),
//! a record over `source.max_record_bytes` is held as `oversize_record` as the ingest holds it, and the
//! rest goes through [`normalize_bytes`]. A bad record is a verdict of its own and never fails the array.
//!
//! The input is streamed: the array is read record by record from a buffered reader, and each result is
//! printed as soon as it is made, so memory follows the largest record, not the input.
//!
//! A record that is not JSON at all (a syntax error inside the array) is different: the daemon refuses
//! the whole page then (its `content` does not parse, a transport fault retried later), as nothing tells
//! where the next record would start. The command prints the results of the records before it, closes the
//! array, and fails with the position of the error. A record that is JSON but not a dossier (a string, an
//! object of the wrong shape, duplicate keys) is a `malformed_record` verdict, as in the daemon.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::config::{Settings, default_max_record_bytes};
use crate::normalize::codes::{message_en, message_vi};
use crate::normalize::oversize::oversize_record;
use crate::normalize::{MappingTables, Normalized, Outcome, normalize_bytes};
use crate::privacy;
use crate::source::escapes::escape_invalid_utf8_into;
use crate::source::wire::RecordHeader;

#[derive(Args, Debug)]
pub struct NormalizeArgs {
    /// A file holding one SourceDossier or a JSON array of them; `-` or nothing reads standard input.
    pub input: Option<PathBuf>,
    /// The daemon's configuration, for its mapping tables (`mapping.tables_file`) and its size limit
    /// (`source.max_record_bytes`, 8 MiB without a configuration).
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

/// Prints the verdict on every record of the input, as one JSON array written record by record.
pub fn run(args: NormalizeArgs) -> anyhow::Result<ExitCode> {
    let settings = match &args.config {
        Some(config) => Some(Settings::load(Some(config))?),
        None => None,
    };
    let tables_path = args.tables.clone().or_else(|| {
        settings
            .as_ref()
            .and_then(|settings| settings.mapping.tables_file.clone())
    });
    let tables = match &tables_path {
        Some(path) => MappingTables::load(path)
            .with_context(|| format!("failed to read the mapping tables {}", path.display()))?,
        None => MappingTables::default(),
    };
    let max_record_bytes = settings
        .as_ref()
        .map_or_else(default_max_record_bytes, |settings| {
            settings.source.max_record_bytes
        });
    let input: Box<dyn Read> = match args.input.as_deref() {
        Some(path) if path.as_os_str() != "-" => Box::new(
            std::fs::File::open(path)
                .with_context(|| format!("failed to read {}", path.display()))?,
        ),
        _ => Box::new(std::io::stdin().lock()),
    };
    let now = jiff::Timestamp::now();
    let mut output = Output::new(std::io::BufWriter::new(std::io::stdout().lock()));
    let read = read_records(EscapingReader::new(input), |raw| {
        let normalized = verdict(raw.get(), &tables, max_record_bytes, now);
        output.print(&describe(&normalized, args.show_personal_data))
    });
    let closed = output.finish();
    match (read, closed) {
        (Err(Stop::Output(error)), _) | (_, Err(error)) => match error.kind() {
            // A reader that stops early (`| head`) is not an error of ours.
            std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
            _ => Err(anyhow::Error::new(error).context("failed to write the results")),
        },
        (Err(Stop::Input(error)), Ok(())) => Err(anyhow::Error::new(error).context(format!(
            "the input is not JSON (the {} record(s) before the error are printed)",
            output.printed
        ))),
        (Ok(()), Ok(())) => Ok(ExitCode::SUCCESS),
    }
}

/// The daemon's verdict on one record's text (UTF-8 already, escaped as the source client escapes).
fn verdict(
    raw: &str,
    tables: &MappingTables,
    max_record_bytes: usize,
    now: jiff::Timestamp,
) -> Normalized {
    if raw.len() <= max_record_bytes {
        return normalize_bytes(raw.as_bytes(), tables, now);
    }
    // Filed as the feed reader and the ingest file it: under its id, or a synthetic one without.
    let hash = blake3::hash(raw.as_bytes()).to_hex().to_string();
    let id = serde_json::from_str::<RecordHeader>(raw)
        .ok()
        .and_then(|header| header.id)
        .map_or_else(
            || format!("malformed:{}", &hash[..24]),
            |id| id.as_text().into_owned(),
        );
    oversize_record(&id, raw, &hash).0
}

/// Why reading the records stopped early.
enum Stop {
    /// The input is not JSON (or could not be read).
    Input(serde_json::Error),
    /// The results could not be written.
    Output(std::io::Error),
}

/// Calls `each` on every record of `input`: the items of a top-level array, or the one value it holds.
fn read_records<R: Read>(
    input: R,
    mut each: impl FnMut(&RawValue) -> std::io::Result<()>,
) -> Result<(), Stop> {
    let mut input = BufReader::with_capacity(256 * 1024, input);
    let is_array = first_byte(&mut input)
        .map_err(|error| Stop::Input(serde_json::Error::io(error)))?
        == Some(b'[');
    let mut deserializer = serde_json::Deserializer::from_reader(input);
    let mut failed_output = None;
    let mut each = |raw: &RawValue| {
        each(raw)
            .map_err(|error| failed_output = Some(error))
            .is_ok()
    };
    let read = if is_array {
        deserializer.deserialize_seq(Records(&mut each))
    } else {
        Box::<RawValue>::deserialize(&mut deserializer).map(|raw| {
            each(&raw);
        })
    };
    if let Some(error) = failed_output {
        return Err(Stop::Output(error));
    }
    read.and_then(|()| deserializer.end()).map_err(Stop::Input)
}

/// The first byte of `input` that is not white space, left unread; `None` for an empty input.
fn first_byte(input: &mut impl BufRead) -> std::io::Result<Option<u8>> {
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
            return Ok(None);
        }
        let blanks = buffer
            .iter()
            .take_while(|byte| byte.is_ascii_whitespace())
            .count();
        let first = buffer.get(blanks).copied();
        input.consume(blanks);
        if first.is_some() {
            return Ok(first);
        }
    }
}

/// Visits a top-level array item by item, each as its raw text; stops when `each` returns false.
struct Records<'a, F>(&'a mut F);

impl<'de, F: FnMut(&RawValue) -> bool> Visitor<'de> for Records<'_, F> {
    type Value = ();
    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an array of source records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while let Some(raw) = items.next_element::<Box<RawValue>>()? {
            if !(self.0)(&raw) {
                return Err(serde::de::Error::custom("the results could not be written"));
            }
        }
        Ok(())
    }
}

/// Reads its input with every byte that is not part of valid UTF-8 written as `\udcXX`, as the source
/// client writes an answer's, piece by piece.
struct EscapingReader<R> {
    input: R,
    /// Bytes read but not escaped yet: a character cut off at the end of the last piece.
    unread: Vec<u8>,
    escaped: Vec<u8>,
    position: usize,
    ended: bool,
}

impl<R: Read> EscapingReader<R> {
    fn new(input: R) -> EscapingReader<R> {
        EscapingReader {
            input,
            unread: Vec::new(),
            escaped: Vec::new(),
            position: 0,
            ended: false,
        }
    }
}

impl<R: Read> Read for EscapingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        const PIECE: usize = 64 * 1024;
        while self.position == self.escaped.len() {
            if self.ended {
                return Ok(0);
            }
            self.escaped.clear();
            self.position = 0;
            let carried = self.unread.len();
            self.unread.resize(carried + PIECE, 0);
            let read = self.input.read(&mut self.unread[carried..]);
            self.unread.truncate(carried + *read.as_ref().unwrap_or(&0));
            self.ended = read? == 0;
            let used = escape_invalid_utf8_into(&self.unread, self.ended, &mut self.escaped);
            self.unread.drain(..used);
        }
        let length = buffer.len().min(self.escaped.len() - self.position);
        buffer[..length].copy_from_slice(&self.escaped[self.position..self.position + length]);
        self.position += length;
        Ok(length)
    }
}

/// The results as one pretty-printed JSON array, written item by item.
struct Output<W: Write> {
    out: W,
    printed: usize,
}

impl<W: Write> Output<W> {
    fn new(out: W) -> Output<W> {
        Output { out, printed: 0 }
    }

    /// Writes one result, indented as an item of the array, and flushes it.
    fn print(&mut self, result: &Value) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(result)?;
        self.out
            .write_all(if self.printed == 0 { b"[\n" } else { b",\n" })?;
        for (index, line) in text.lines().enumerate() {
            if index > 0 {
                self.out.write_all(b"\n")?;
            }
            self.out.write_all(b"  ")?;
            self.out.write_all(line.as_bytes())?;
        }
        self.printed += 1;
        self.out.flush()
    }

    /// Closes the array.
    fn finish(&mut self) -> std::io::Result<()> {
        self.out
            .write_all(if self.printed == 0 { b"[]\n" } else { b"\n]\n" })?;
        self.out.flush()
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
