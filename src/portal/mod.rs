//! The National Public Service Portal (destination) adapter: wire types, their payload writer, HTTP client and the adaptive concurrency of its calls.

pub mod client;
pub mod concurrency;
pub mod payload;
pub mod wire;
