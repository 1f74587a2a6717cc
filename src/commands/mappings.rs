//! `tthc-sync mappings suggest`: the source agencies and procedures that have no mapping yet, with how
//! many dossiers each holds back, written as a fragment of the mapping tables file ready to be edited.
//!
//! The held-back dossiers are read from the ledger and normalized again under the tables in force, so
//! that what was fixed since they were held does not show. The source's catalogs (when the source
//! answers) add the agencies and procedures that hold nothing back yet, and the national code the source
//! itself knows for a procedure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::app::load_tables;
use crate::config::Settings;
use crate::http::RetryPolicy;
use crate::normalize::procedures::{NationalProcedureCode, resolve};
use crate::normalize::units::UnitCode;
use crate::normalize::{MappingTables, Normalized, Outcome, codes, normalize_bytes};
use crate::source::client::SourceClient;
use crate::source::wire::{AgencyItem, ProcedureItem};

#[derive(Subcommand, Debug)]
pub enum MappingsCommand {
    /// Print the agencies and procedures without a mapping, as a mapping-tables fragment to fill in.
    Suggest(SuggestArgs),
}

#[derive(Args, Debug)]
pub struct SuggestArgs {
    #[arg(long, short, env = "TTHC_SYNC_CONFIG")]
    pub config: PathBuf,
    /// Do not ask the source for its catalogs: list only what holds dossiers back.
    #[arg(long)]
    pub offline: bool,
}

pub async fn run(command: MappingsCommand) -> anyhow::Result<ExitCode> {
    let MappingsCommand::Suggest(args) = command;
    let settings = Settings::load(Some(&args.config))?;
    let tables = load_tables(&settings)?;
    let store = crate::store::open_read_only(&settings.store).await?;
    let mut gaps = Gaps::default();
    let now = jiff::Timestamp::now();
    let mut after = String::new();
    loop {
        let held = store.held_records(&after, 1000).await?;
        let Some(last) = held.last() else { break };
        after = last.source_id.clone();
        for record in &held {
            let normalized = normalize_bytes(record.raw.as_bytes(), &tables, now);
            gaps.add_held(&record.raw, &normalized, record.reason_code.as_deref());
        }
    }
    store.close().await;
    if !args.offline {
        let source = SourceClient::new(&settings.source, RetryPolicy::none())?;
        match tokio::try_join!(source.agencies(), source.procedures()) {
            Ok((agencies, procedures)) => gaps.add_catalogs(&agencies, &procedures, &tables),
            Err(error) => eprintln!(
                "tthc-sync: the source's catalogs could not be read ({error}); listing only what holds dossiers back"
            ),
        }
    }
    let file = settings
        .mapping
        .tables_file
        .as_ref()
        .map(|path| path.display().to_string());
    print!("{}", gaps.render(file.as_deref()));
    Ok(ExitCode::SUCCESS)
}

/// A source agency without a unit mapping.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnitGap {
    pub held: u64,
    pub name: Option<String>,
    /// The source's own `agency.code`, when it has one (of the wrong shape).
    pub source_code: Option<String>,
}

/// A local procedure code without a national code.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProcedureGap {
    pub held: u64,
    pub name: Option<String>,
    /// The national code the source's catalog gives for it, when it gives one of the right shape.
    pub suggested: Option<String>,
}

/// A code the mapping produces but the portal's catalog does not list.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnknownGap {
    pub held: u64,
    /// Source agency ids (for units) or local codes (for procedures) that lead to it.
    pub from: BTreeMap<String, u64>,
}

/// What is missing from the mapping tables, as the held-back dossiers and the source's catalogs show.
#[derive(Debug, Default)]
pub struct Gaps {
    /// Source agency id → gap.
    pub units: BTreeMap<String, UnitGap>,
    /// Local procedure code → gap.
    pub procedures: BTreeMap<String, ProcedureGap>,
    /// Portal unit code → gap.
    pub unknown_units: BTreeMap<String, UnknownGap>,
    /// National procedure code → gap.
    pub unknown_procedures: BTreeMap<String, UnknownGap>,
}

fn text_at<'a>(record: &'a Value, object: &str, field: &str) -> Option<&'a str> {
    record
        .get(object)?
        .get(field)?
        .as_str()
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

impl Gaps {
    /// Counts one held-back dossier, normalized again under the tables in force. `stored_reason` is the
    /// reason the ledger holds it for: the catalog pre-flight's reasons are not normalization's, so they
    /// come from there.
    pub fn add_held(&mut self, raw: &str, normalized: &Normalized, stored_reason: Option<&str>) {
        let record: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
        let agency_id = text_at(&record, "agency", "id");
        let local_procedure = text_at(&record, "procedure", "code");
        if let Outcome::Rejected(findings) = &normalized.outcome {
            if findings.iter().any(|f| f.code == codes::UNMAPPED_UNIT)
                && let Some(agency_id) = agency_id
            {
                let gap = self.units.entry(agency_id.to_owned()).or_default();
                gap.held += 1;
                gap.name = gap
                    .name
                    .take()
                    .or(text_at(&record, "agency", "name").map(str::to_owned));
                gap.source_code = gap
                    .source_code
                    .take()
                    .or(text_at(&record, "agency", "code").map(str::to_owned));
            }
            if findings.iter().any(|f| f.code == codes::UNMAPPED_PROCEDURE)
                && let Some(local) = local_procedure
            {
                let gap = self.procedures.entry(local.to_owned()).or_default();
                gap.held += 1;
                gap.name = gap
                    .name
                    .take()
                    .or(text_at(&record, "procedure", "name").map(str::to_owned));
            }
        }
        // Normalization alone would send it: it is held by the pre-flight, whose verdict stands until
        // the daemon asks the portal again.
        if let Outcome::Dossier(dossier) = &normalized.outcome {
            let (map, code, from) = match stored_reason {
                Some(codes::UNIT_UNKNOWN_TO_PORTAL) => (
                    &mut self.unknown_units,
                    &dossier.dossier.don_vi_xu_ly,
                    agency_id,
                ),
                Some(codes::PROCEDURE_UNKNOWN_TO_PORTAL) => (
                    &mut self.unknown_procedures,
                    &dossier.dossier.ma_tthc,
                    local_procedure,
                ),
                _ => return,
            };
            let gap = map.entry(code.clone()).or_default();
            gap.held += 1;
            *gap.from.entry(from.unwrap_or("?").to_owned()).or_default() += 1;
        }
    }

    /// Adds the catalog entries that would be held back as unmapped, even if none is yet.
    pub fn add_catalogs(
        &mut self,
        agencies: &[AgencyItem],
        procedures: &[ProcedureItem],
        tables: &MappingTables,
    ) {
        for agency in agencies.iter().filter(|agency| !agency.deleted) {
            let mapped = tables.units.contains_key(&agency.id)
                || agency
                    .code
                    .as_deref()
                    .is_some_and(|code| UnitCode::parse(code).is_some());
            if !mapped {
                let gap = self.units.entry(agency.id.clone()).or_default();
                gap.name.get_or_insert_with(|| agency.name.clone());
                if gap.source_code.is_none() {
                    gap.source_code = agency.code.clone().filter(|code| !code.trim().is_empty());
                }
            }
        }
        for procedure in procedures {
            let suggested = procedure
                .national_code
                .as_deref()
                .and_then(NationalProcedureCode::parse)
                .map(NationalProcedureCode::into_string);
            if resolve(&procedure.code, tables).is_none() {
                let gap = self.procedures.entry(procedure.code.clone()).or_default();
                gap.name.get_or_insert_with(|| procedure.name.clone());
                gap.suggested = gap.suggested.take().or(suggested);
            } else if let Some(gap) = self.procedures.get_mut(&procedure.code) {
                gap.suggested = gap.suggested.take().or(suggested);
            }
        }
    }

    /// The fragment: sections to paste into the tables file, most held-back dossiers first.
    pub fn render(&self, tables_file: Option<&str>) -> String {
        let mut out = String::new();
        let target = tables_file.unwrap_or("the file named by mapping.tables_file");
        let _ = writeln!(
            out,
            "# tthc-sync mappings suggest: what the mapping tables lack.\n\
             # Fill in the empty codes, paste the lines into the sections of {target},\n\
             # run `tthc-sync check-config`, then reload the daemon (systemctl reload tthc-sync, or SIGHUP):\n\
             # the dossiers held back are normalized again and sent."
        );
        if self.is_empty() {
            let _ = writeln!(
                out,
                "\n# Nothing is missing: no dossier is held back for a mapping."
            );
            return out;
        }
        if !self.units.is_empty() {
            let _ = writeln!(
                out,
                "\n# Source agencies without a portal unit code ({}): \"agency id\" = \"ddd.dd.dd.Ldd\"\n[units]",
                codes::UNMAPPED_UNIT
            );
            for (id, gap) in by_held(&self.units, |gap| gap.held) {
                let code = gap
                    .source_code
                    .as_deref()
                    .map_or_else(|| "none".to_owned(), |code| format!("{code:?}"));
                let _ = writeln!(
                    out,
                    "{} = \"\"    # {}; held back: {}; agency.code at the source: {code}",
                    quoted(id),
                    gap.name.as_deref().unwrap_or("(no name)"),
                    gap.held
                );
            }
        }
        if !self.procedures.is_empty() {
            let _ = writeln!(
                out,
                "\n# Local procedure codes without a national code ({}): \"local code\" = \"d.dddddd\"\n[procedures]",
                codes::UNMAPPED_PROCEDURE
            );
            for (local, gap) in by_held(&self.procedures, |gap| gap.held) {
                let hint = if gap.suggested.is_some() {
                    "; the national code is the source catalog's, check it"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "{} = {}    # {}; held back: {}{hint}",
                    quoted(local),
                    quoted(gap.suggested.as_deref().unwrap_or("")),
                    gap.name.as_deref().unwrap_or("(no name)"),
                    gap.held
                );
            }
        }
        for (title, code, map) in [
            (
                "Unit codes the portal's catalog does not list: ask the portal's administrators to add them,\n\
                 # or map these agencies to another code in [units]",
                codes::UNIT_UNKNOWN_TO_PORTAL,
                &self.unknown_units,
            ),
            (
                "Procedure codes the portal does not know: ask the portal's administrators,\n\
                 # or map these local codes to another national code in [procedures]",
                codes::PROCEDURE_UNKNOWN_TO_PORTAL,
                &self.unknown_procedures,
            ),
        ] {
            if map.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n# {title} ({code}):");
            for (portal_code, gap) in by_held(map, |gap| gap.held) {
                let from = gap
                    .from
                    .iter()
                    .map(|(key, count)| format!("{} ({count})", quoted(key)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(
                    out,
                    "#   {portal_code}: held back: {}; from {from}",
                    gap.held
                );
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
            && self.procedures.is_empty()
            && self.unknown_units.is_empty()
            && self.unknown_procedures.is_empty()
    }
}

/// Entries with the most held-back dossiers first, then by key.
fn by_held<T>(map: &BTreeMap<String, T>, held: impl Fn(&T) -> u64) -> Vec<(&String, &T)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| held(b.1).cmp(&held(a.1)).then_with(|| a.0.cmp(b.0)));
    entries
}

/// A TOML basic string: a key or value written so that any text stays one valid key.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}
