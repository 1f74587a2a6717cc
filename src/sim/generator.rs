//! Deterministic generator of realistic dossiers.
