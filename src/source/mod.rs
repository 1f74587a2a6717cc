//! The provincial one-stop system (source) adapter: wire types, HTTP client and the feed reader.

pub mod client;
pub mod escapes;
pub mod feed;
pub mod time;
pub mod wire;
