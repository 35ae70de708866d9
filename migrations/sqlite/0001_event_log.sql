-- The partitioned event log of annals (SQLite).

-- One row: the store's identity and its fixed partition count.
CREATE TABLE annals_store (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    store_id        BLOB    NOT NULL,
    partition_count INTEGER NOT NULL CHECK (partition_count > 0),
    leader_epoch    INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
);

-- One row per partition (0 .. partition_count - 1).
CREATE TABLE annals_partitions (
    partition INTEGER PRIMARY KEY
);

-- Every record. A partition's offsets are 0..n-1 without gaps; a stream's versions
-- 1..v, all in one partition. Payload and metadata are the JSON text as appended.
-- recorded_at is microseconds since the Unix epoch, UTC.
CREATE TABLE annals_events (
    partition   INTEGER NOT NULL,
    "offset"    INTEGER NOT NULL,
    stream_id   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    event_id    BLOB    NOT NULL,
    event_type  TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    metadata    TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX annals_events_position ON annals_events (partition, "offset");
CREATE UNIQUE INDEX annals_events_stream_version ON annals_events (stream_id, version);
CREATE UNIQUE INDEX annals_events_event_id ON annals_events (event_id);
-- The first event of each stream, for listing streams.
CREATE INDEX annals_events_stream_starts ON annals_events (stream_id) WHERE version = 1;

-- The outcome of every append made with a command id (idempotency, I5).
CREATE TABLE annals_command_ids (
    command_id    BLOB    PRIMARY KEY,
    stream_id     TEXT    NOT NULL,
    partition     INTEGER NOT NULL,
    first_offset  INTEGER NOT NULL,
    last_offset   INTEGER NOT NULL,
    first_version INTEGER NOT NULL,
    last_version  INTEGER NOT NULL
) WITHOUT ROWID;
