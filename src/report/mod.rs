pub mod indicators;
