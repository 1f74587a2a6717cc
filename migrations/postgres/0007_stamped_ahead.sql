-- Source-api.md quirk 10: true when the current version's `updatedDate` was ahead of the clock (plus
-- `source.max_clock_skew_seconds`) when it was read. Such rows are ingested like any other; the reports
-- count them per unit so that the unit can correct its clock or the typing error.
ALTER TABLE dossiers ADD COLUMN stamped_ahead BOOLEAN NOT NULL DEFAULT FALSE;
