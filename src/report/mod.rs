//! Everything a report is: [`lines`] assembles a period's per-unit lines once for every reader (the
//! `report` command, the dashboard, `/api/v1/report`), and [`render`] turns them, and the failure lists,
//! into a table, CSV, xlsx or JSON, in Vietnamese or English.

pub mod lines;
pub mod render;
