//! The source simulator.
