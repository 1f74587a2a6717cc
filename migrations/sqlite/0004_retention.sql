-- Retention (`store.retention_days`): when the personal fields of a finished, accepted dossier were cleared
-- (NULL: the body holds what the source sent last). Ingest clears it again when a new record arrives.
ALTER TABLE dossier_bodies ADD COLUMN redacted_at INTEGER;
-- The retention pass walks the dossiers accepted before a time.
CREATE INDEX dossiers_accepted ON dossiers (state, accepted_at);
