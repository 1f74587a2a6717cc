//! The commands behind the binary's subcommands (thin: they wire the library's parts together).

pub mod demo;
pub mod ledger;
pub mod mappings;
pub mod normalize;
pub mod run;
pub mod simulate;
pub mod store;
