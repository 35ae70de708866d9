-- The snapshot log: a keyed log (key = stream id) of aggregate states. A row with a
-- NULL state is a tombstone: it removes its key. Compaction keeps, per key, only the
-- newest snapshot (highest version) after the key's last tombstone, and tombstones
-- for a retention period. Times are microseconds since the Unix epoch.
CREATE TABLE annals_snapshots (
    seq            bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id      text    COLLATE "C" NOT NULL,
    version        bigint  NOT NULL,
    schema_version integer NOT NULL,
    state          text,
    taken_at       bigint  NOT NULL
);
CREATE INDEX annals_snapshots_by_key ON annals_snapshots (stream_id, version);
