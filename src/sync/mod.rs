//! The sync pipeline: the poller (source feed → ledger) and the pusher (ledger → portal). The pure
//! decisions they and the stores take are in [`crate::decide`].

pub mod catalog;
pub mod ingest;
pub mod push;
