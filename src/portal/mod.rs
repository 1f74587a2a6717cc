//! The National Public Service Portal (destination) adapter: wire types and HTTP client.

pub mod client;
pub mod wire;
