-- The PostgreSQL ledger, column for column the SQLite one (migrations/sqlite/0001_ledger.sql): one row per
-- source dossier and where it stands with the portal. The large texts (the source record, the payload, the
-- findings) live in `dossier_bodies`, so that the state changes of delivery (claim, answer) rewrite a row
-- of a few hundred bytes, not kilobytes.
-- Times are Unix milliseconds (UTC) in BIGINT, as in SQLite, so that both ledgers read the same way;
-- days are 'YYYY-MM-DD' in Vietnam time.
CREATE TABLE dossiers (
    source_id          TEXT PRIMARY KEY NOT NULL,
    dossier_code       TEXT,
    raw_hash           TEXT NOT NULL,            -- blake3 of raw: duplicates are absorbed by it
    source_updated_at  BIGINT,                   -- updatedDate, when it parses
    source_agency_id   TEXT,
    unit               TEXT,                     -- resolved portal unit code
    procedure_code     TEXT,
    reception_day      TEXT,
    payload_hash       TEXT,
    state              TEXT NOT NULL,            -- pending | in_flight | accepted | held | refused | skipped
    reason_code        TEXT,                     -- held: first rejection code; refused: 'portal_2' / 'portal_5'; skipped: cancelled/deleted
    reason_detail      TEXT,                     -- the portal's message, or a summary of the rejections (no personal data)
    portal_has         BOOLEAN NOT NULL DEFAULT FALSE, -- the portal holds some version of this dossier
    accepted_hash      TEXT,                     -- payload hash the portal last accepted
    accepted_at        BIGINT,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    BIGINT,
    last_error         TEXT,
    lease_owner        TEXT,
    lease_expires_at   BIGINT,
    first_seen_at      BIGINT NOT NULL,
    changed_at         BIGINT NOT NULL           -- when this row's source record last changed
);
CREATE INDEX dossiers_due ON dossiers (state, next_attempt_at);
CREATE INDEX dossiers_leases ON dossiers (state, lease_expires_at);
CREATE INDEX dossiers_unit ON dossiers (unit, reception_day);
CREATE INDEX dossiers_code ON dossiers (dossier_code);

CREATE TABLE dossier_bodies (
    source_id          TEXT PRIMARY KEY NOT NULL,
    raw                TEXT NOT NULL,            -- the source record exactly as received
    payload            TEXT,                     -- normalized portal dossier (exact bytes sent)
    findings           TEXT NOT NULL             -- JSON array of rejections and warnings (values masked)
);

-- Processing-progress entries (CapNhatTienDoHoSoMC), identified as the portal identifies them.
CREATE TABLE progress (
    source_id          TEXT NOT NULL,
    entry_key          TEXT NOT NULL,
    payload            TEXT NOT NULL,
    payload_hash       TEXT NOT NULL,
    sent_hash          TEXT,                     -- payload hash the portal last accepted
    state              TEXT NOT NULL,            -- waiting (for its dossier) | pending | in_flight | sent | refused
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    BIGINT NOT NULL,
    last_error         TEXT,
    lease_owner        TEXT,
    lease_expires_at   BIGINT,
    PRIMARY KEY (source_id, entry_key)
);
CREATE INDEX progress_due ON progress (state, next_attempt_at);
CREATE INDEX progress_leases ON progress (state, lease_expires_at);

-- Where each reader stands: the feed cursor (an updatedDate in Unix ms), and others later.
CREATE TABLE cursors (
    name        TEXT PRIMARY KEY NOT NULL,
    value       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- One row per call to the portal or the source that moved dossiers: the attempt log.
CREATE TABLE attempts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    owner       TEXT NOT NULL,
    service     TEXT NOT NULL,
    items       BIGINT NOT NULL,
    outcome     TEXT NOT NULL,                   -- ok | partial | failed
    detail      TEXT,
    duration_ms BIGINT NOT NULL
);
CREATE INDEX attempts_at ON attempts (at);
