-- The content check of reconciliation: when the portal's copy of an accepted dossier (TraCuuHoSo) was last
-- compared with its payload (NULL: never). Each run checks first the dossiers checked longest ago, so that a
-- per-run budget smaller than the dossiers accepted within `reconcile.content_check_hours` still covers
-- them all over a few runs.
ALTER TABLE dossiers ADD COLUMN content_checked_at BIGINT;
