-- Delivery truth (portal-api.md 2.1, 2.2): a call in flight is a *flight* of its own (the claim it was made
-- under and the payload hash it carries), apart from the dossier's current version, so that a new source
-- version waits behind the call instead of replacing it, and an answer lands only on its own claim.
ALTER TABLE dossiers ADD COLUMN flight_claim TEXT;            -- the claim whose call is in flight (NULL: none)
ALTER TABLE dossiers ADD COLUMN flight_hash TEXT;             -- the payload hash that call carries
ALTER TABLE dossiers ADD COLUMN recheck INTEGER NOT NULL DEFAULT 0; -- a late answer arrived during the flight
ALTER TABLE progress ADD COLUMN flight_claim TEXT;
ALTER TABLE progress ADD COLUMN flight_hash TEXT;
ALTER TABLE progress ADD COLUMN step_at TEXT NOT NULL DEFAULT ''; -- ThoiDiemXuLy: a dossier's entries go in this order

-- Claims made before this migration become flights of their owner, so that a restart releases them.
UPDATE dossiers SET flight_claim = 'before-0005', flight_hash = payload_hash WHERE state = 'in_flight';
UPDATE progress SET flight_claim = 'before-0005', flight_hash = payload_hash WHERE state = 'in_flight';
UPDATE progress SET step_at = COALESCE(json_extract(payload, '$.ThoiDiemXuLy'), '') WHERE payload <> '';

-- Rows with a flight are few: lapsed leases and an owner's claims are found through these.
CREATE INDEX dossiers_flights ON dossiers (lease_owner, lease_expires_at) WHERE flight_claim IS NOT NULL;
CREATE INDEX progress_flights ON progress (source_id) WHERE flight_claim IS NOT NULL;
