-- The reports read a period's payloads in pages ordered by (reception_day, source_id), each page starting
-- after the last one's key, so that memory stays at one page however long the period (issue 13, item 7).
-- These indexes give the rows in that order, for the whole ledger and within one unit; the unit's index
-- replaces `dossiers_unit` (unit, reception_day), of which it is an extension.
CREATE INDEX dossiers_reception ON dossiers (reception_day, source_id);
CREATE INDEX dossiers_unit_reception ON dossiers (unit, reception_day, source_id);
DROP INDEX dossiers_unit;
-- The dashboard's readiness and every summary count the ledger by state and reason: read from this
-- index alone, not from the table's rows.
CREATE INDEX dossiers_state_reason ON dossiers (state, reason_code);
