//! Simulators of both systems the daemon sits between, for tests, `tthc-sync demo` and
//! `tthc-sync simulate`: they behave as `../shared/spec/` says, faults included.
//!
//! - [`dates`]: the simulators' own reading and writing of the source's dates (none of the daemon's).
//! - [`generator`]: a deterministic dataset of realistic dossiers (with a share of bad ones).
//! - [`source`]: the provincial one-stop system (source-api.md), with every quirk of its section 6.
//! - [`network`]: latency on every call and the portal's rate limit, for a network like the real one.
//! - [`wire`]: the JSON shapes both answer with, from the spec (none of the daemon's types).
//! - [`portal`]: the National Public Service Portal (portal-api.md), with fault injection and a record of
//!   everything it stored and every call it received.

pub mod dates;
pub mod generator;
pub mod network;
pub mod portal;
pub mod source;
pub mod wire;

/// How hostile the simulated wire is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultLevel {
    /// A well-behaved system.
    None,
    /// What a province sees on a normal day: every quirk on, at rates that have teeth.
    #[default]
    Realistic,
    /// Far more faults than any real system, to shake out retry bugs.
    Harsh,
}

impl std::str::FromStr for FaultLevel {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(FaultLevel::None),
            "realistic" => Ok(FaultLevel::Realistic),
            "harsh" => Ok(FaultLevel::Harsh),
            other => Err(format!(
                "unknown fault level {other:?} (expected none, realistic or harsh)"
            )),
        }
    }
}
