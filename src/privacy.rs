//! Masking of personal data for every output that is not the portal payload (mapping.md, Personal data).
