-- Reconciliation, as in migrations/sqlite/0002_reconciliation.sql: the ledger's side of a (source agency,
-- reception day) bucket is listed by this index, and every run is kept, one row per unit, for reports,
-- metrics and the dashboard.
CREATE INDEX dossiers_agency_day ON dossiers (source_agency_id, reception_day);

CREATE TABLE reconciliations (
    run_id          TEXT NOT NULL,
    unit            TEXT NOT NULL,            -- portal unit code, or 'agency:<id>' when it has none
    started_at      BIGINT NOT NULL,
    from_day        TEXT NOT NULL,
    to_day          TEXT NOT NULL,
    source_count    BIGINT,                   -- NULL when the source's counts could not be read
    ledger_count    BIGINT NOT NULL,          -- dossiers of the period in the ledger (skipped excluded)
    accepted        BIGINT NOT NULL,
    portal_count    BIGINT,                   -- NULL when the portal offers no counts
    missing         BIGINT NOT NULL,          -- at the source, never seen by tthc-sync
    complete        BOOLEAN NOT NULL,         -- accepted = source count and nothing is missing
    summary         TEXT NOT NULL,            -- the run's line for this unit (JSON, as in the log)
    PRIMARY KEY (run_id, unit)
);
CREATE INDEX reconciliations_unit ON reconciliations (unit, started_at);
