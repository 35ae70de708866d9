-- Consumer groups: membership, partition ownership, committed offsets, dead letters.
-- Times are milliseconds since the Unix epoch, taken from the database's clock.

-- One row per group; the generation is bumped on every membership change.
CREATE TABLE annals_groups (
    group_name text    PRIMARY KEY,
    generation bigint  NOT NULL,
    created_at bigint  NOT NULL
);

-- Live members; a member whose heartbeat is older than its session timeout is removed
-- by the next member to heartbeat.
CREATE TABLE annals_group_members (
    group_name         text    NOT NULL,
    member_id          text    NOT NULL,
    host               text    NOT NULL,
    joined_at          bigint  NOT NULL,
    heartbeat_at       bigint  NOT NULL,
    session_timeout_ms bigint  NOT NULL,
    PRIMARY KEY (group_name, member_id)
);

-- One row per group and partition: the next offset to process, the owner and the
-- generation it was given the partition in (commits are fenced on both).
CREATE TABLE annals_group_offsets (
    group_name       text    NOT NULL,
    partition        integer NOT NULL,
    committed        bigint  NOT NULL,
    owner            text,
    owner_generation bigint  NOT NULL,
    paused           bigint  NOT NULL,
    stopped_reason   text,
    updated_at       bigint  NOT NULL,
    PRIMARY KEY (group_name, partition)
);

-- Records a group gave up on ('failed'), records of the same stream parked behind
-- them ('parked'), and either kind waiting to be handled again ('retry').
CREATE TABLE annals_dead_letters (
    id         bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    group_name text    NOT NULL,
    partition  integer NOT NULL,
    "offset"   bigint  NOT NULL,
    stream_id  text    NOT NULL,
    event_id   text    NOT NULL,
    event_type text    NOT NULL,
    status     text    NOT NULL,
    error      text    NOT NULL,
    attempts   bigint  NOT NULL,
    created_at bigint  NOT NULL,
    UNIQUE (group_name, partition, "offset")
);
CREATE INDEX annals_dead_letters_by_status ON annals_dead_letters (group_name, status);

-- Event ids an at-least-once consumer has marked as done (its dedup helper).
CREATE TABLE annals_processed (
    group_name text NOT NULL,
    event_id   text NOT NULL,
    PRIMARY KEY (group_name, event_id)
);
