-- The claims look for pending rows by when they are due and for in-flight rows by when their lease lapses;
-- nothing else reads these four indexes. Kept partial, they hold only the rows in that state, so a row
-- changing state touches at most the index it leaves and the one it enters, instead of every index led by
-- `state` (a profile of the push path showed the index upkeep among its costs). Most rows, accepted
-- dossiers and waiting or sent progress entries, are in none of them.
DROP INDEX dossiers_due;
CREATE INDEX dossiers_due ON dossiers (next_attempt_at) WHERE state = 'pending';
DROP INDEX dossiers_leases;
CREATE INDEX dossiers_leases ON dossiers (lease_expires_at) WHERE state = 'in_flight';
DROP INDEX progress_due;
CREATE INDEX progress_due ON progress (next_attempt_at) WHERE state = 'pending';
DROP INDEX progress_leases;
CREATE INDEX progress_leases ON progress (lease_expires_at) WHERE state = 'in_flight';
