-- Roles that only one of several instances sharing the ledger may hold at a time (polling the source
-- feed): a lease that its holder renews and that another instance takes over once it has expired.
CREATE TABLE leaders (
    role        TEXT PRIMARY KEY NOT NULL,
    owner       TEXT NOT NULL,                   -- store.instance of the holder
    expires_at  INTEGER NOT NULL                 -- Unix ms
);
