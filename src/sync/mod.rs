//! The sync pipeline: the poller (source feed → ledger), the pusher (ledger → portal) and the pure
//! decisions both take.

pub mod catalog;
pub mod decide;
pub mod ingest;
pub mod push;
