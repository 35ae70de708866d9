-- Consumer groups: membership, partition ownership, committed offsets, dead letters.
-- Times are milliseconds since the Unix epoch, taken from the database's clock.

-- One row per group; the generation is bumped on every membership change.
CREATE TABLE annals_groups (
    group_name TEXT    PRIMARY KEY,
    generation INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

-- Live members; a member whose heartbeat is older than its session timeout is removed
-- by the next member to heartbeat.
CREATE TABLE annals_group_members (
    group_name         TEXT    NOT NULL,
    member_id          TEXT    NOT NULL,
    host               TEXT    NOT NULL,
    joined_at          INTEGER NOT NULL,
    heartbeat_at       INTEGER NOT NULL,
    session_timeout_ms INTEGER NOT NULL,
    PRIMARY KEY (group_name, member_id)
);

-- One row per group and partition: the next offset to process, the owner and the
-- generation it was given the partition in (commits are fenced on both).
CREATE TABLE annals_group_offsets (
    group_name       TEXT    NOT NULL,
    partition        INTEGER NOT NULL,
    committed        INTEGER NOT NULL,
    owner            TEXT,
    owner_generation INTEGER NOT NULL,
    paused           INTEGER NOT NULL,
    stopped_reason   TEXT,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (group_name, partition)
);

-- Records a group gave up on ('failed'), records of the same stream parked behind
-- them ('parked'), and either kind waiting to be handled again ('retry').
CREATE TABLE annals_dead_letters (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    group_name TEXT    NOT NULL,
    partition  INTEGER NOT NULL,
    "offset"   INTEGER NOT NULL,
    stream_id  TEXT    NOT NULL,
    event_id   TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    error      TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (group_name, partition, "offset")
);
CREATE INDEX annals_dead_letters_by_status ON annals_dead_letters (group_name, status);

-- Event ids an at-least-once consumer has marked as done (its dedup helper).
CREATE TABLE annals_processed (
    group_name TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    PRIMARY KEY (group_name, event_id)
);
