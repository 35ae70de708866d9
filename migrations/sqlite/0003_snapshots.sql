-- The snapshot log: a keyed log (key = stream id) of aggregate states. A row with a
-- NULL state is a tombstone: it removes its key. Compaction keeps, per key, only the
-- newest snapshot (highest version) after the key's last tombstone, and tombstones
-- for a retention period. Times are microseconds since the Unix epoch.
CREATE TABLE annals_snapshots (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    state          TEXT,
    taken_at       INTEGER NOT NULL
);
CREATE INDEX annals_snapshots_by_key ON annals_snapshots (stream_id, version);
