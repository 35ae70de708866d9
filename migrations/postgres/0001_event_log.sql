-- The partitioned event log of annals (PostgreSQL).

-- One row: the store's identity and its fixed partition count.
CREATE TABLE annals_store (
    id              integer     PRIMARY KEY CHECK (id = 1),
    store_id        uuid        NOT NULL,
    partition_count integer     NOT NULL CHECK (partition_count > 0),
    leader_epoch    bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per partition. Appends lock the rows of the partitions they write, in
-- ascending order, so a partition has one writer at a time across all processes and
-- its offsets commit in order (I1). next_offset is the high watermark.
CREATE TABLE annals_partitions (
    partition   integer PRIMARY KEY,
    next_offset bigint  NOT NULL DEFAULT 0
);

-- Every record. Stream ids are compared byte-wise (collation "C") so category ranges
-- use the index. Payload and metadata are stored as the JSON text appended.
CREATE TABLE annals_events (
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    stream_id   text        COLLATE "C" NOT NULL,
    version     bigint      NOT NULL,
    event_id    uuid        NOT NULL,
    event_type  text        NOT NULL,
    payload     json        NOT NULL,
    metadata    json        NOT NULL,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (partition, "offset"),
    UNIQUE (stream_id, version),
    UNIQUE (event_id)
);
-- The first event of each stream, for listing streams.
CREATE INDEX annals_events_stream_starts ON annals_events (stream_id) WHERE version = 1;

-- The outcome of every append made with a command id (idempotency, I5).
CREATE TABLE annals_command_ids (
    command_id    uuid    PRIMARY KEY,
    stream_id     text    COLLATE "C" NOT NULL,
    partition     integer NOT NULL,
    first_offset  bigint  NOT NULL,
    last_offset   bigint  NOT NULL,
    first_version bigint  NOT NULL,
    last_version  bigint  NOT NULL
);

-- Appends a batch of appends in one transaction: one round trip for many appends.
--
-- Append i is a_stream[i] .. a_count[i]; its events are the next a_count[i] entries
-- of the e_* arrays. a_expected: -1 any, -2 the stream exists, n >= 0 exactly n
-- (0: no stream). Every append is decided on its own and answered with one row, in
-- order; a failed check writes nothing for that append and does not fail the others:
--   status 0 written, 1 duplicate command id (the original outcome), 2 wrong expected
--   version (o_actual), 3 command id used on another stream (o_other), 4 duplicate
--   event id (o_other).
CREATE FUNCTION annals_append(
    a_stream   text[],
    a_partition integer[],
    a_expected bigint[],
    a_command  uuid[],
    a_count    integer[],
    e_id       uuid[],
    e_check    boolean[],
    e_type     text[],
    e_payload  text[],
    e_metadata text[]
) RETURNS TABLE (
    o_status        smallint,
    o_first_offset  bigint,
    o_last_offset   bigint,
    o_first_version bigint,
    o_last_version  bigint,
    o_actual        bigint,
    o_other         text
) LANGUAGE plpgsql AS $$
DECLARE
    next_offsets bigint[];
    locked       integer[];
    stamp        timestamptz;
    first_event  integer := 1;
    last_event   integer;
    part         integer;
    current_v    bigint;
    expected     bigint;
    known        annals_command_ids%ROWTYPE;
    clash        uuid;
BEGIN
    -- Lock every partition the batch writes, in ascending order: no deadlock between
    -- writers, and each partition's commits happen in offset order.
    FOR part, current_v IN
        SELECT p.partition, p.next_offset FROM annals_partitions p
        WHERE p.partition = ANY (a_partition) ORDER BY p.partition FOR UPDATE
    LOOP
        next_offsets[part] := current_v;
        locked := locked || part;
    END LOOP;
    -- Taken under the locks, so recorded_at never goes back within a partition.
    stamp := clock_timestamp();

    FOR i IN 1 .. coalesce(array_length(a_stream, 1), 0) LOOP
        last_event := first_event + a_count[i] - 1;
        part := a_partition[i];
        o_status := 0; o_first_offset := NULL; o_last_offset := NULL;
        o_first_version := NULL; o_last_version := NULL; o_actual := NULL; o_other := NULL;

        IF a_command[i] IS NOT NULL THEN
            SELECT * INTO known FROM annals_command_ids c WHERE c.command_id = a_command[i];
            IF FOUND THEN
                IF known.stream_id = a_stream[i] THEN
                    o_status := 1;
                    o_first_offset := known.first_offset; o_last_offset := known.last_offset;
                    o_first_version := known.first_version; o_last_version := known.last_version;
                ELSE
                    o_status := 3; o_other := known.stream_id;
                END IF;
            END IF;
        END IF;

        IF o_status = 0 THEN
            SELECT coalesce(max(e.version), 0) INTO current_v
            FROM annals_events e WHERE e.stream_id = a_stream[i];
            expected := a_expected[i];
            IF NOT (expected = -1 OR (expected = -2 AND current_v > 0) OR expected = current_v) THEN
                o_status := 2; o_actual := current_v;
            END IF;
        END IF;

        IF o_status = 0 AND e_check[first_event:last_event] @> ARRAY[true] THEN
            SELECT e.event_id INTO clash FROM annals_events e
            WHERE e.event_id = ANY (e_id[first_event:last_event]) LIMIT 1;
            IF FOUND THEN
                o_status := 4; o_other := clash::text;
            END IF;
        END IF;

        IF o_status = 0 THEN
            o_first_offset := next_offsets[part];
            o_last_offset := o_first_offset + a_count[i] - 1;
            o_first_version := current_v + 1;
            o_last_version := current_v + a_count[i];
            INSERT INTO annals_events
                (partition, "offset", stream_id, version, event_id, event_type, payload, metadata, recorded_at)
            SELECT part, o_first_offset + u.n - 1, a_stream[i], current_v + u.n,
                   u.id, u.kind, u.payload::json, u.metadata::json, stamp
            FROM unnest(e_id[first_event:last_event], e_type[first_event:last_event],
                        e_payload[first_event:last_event], e_metadata[first_event:last_event])
                 WITH ORDINALITY AS u(id, kind, payload, metadata, n);
            IF a_command[i] IS NOT NULL THEN
                INSERT INTO annals_command_ids VALUES
                    (a_command[i], a_stream[i], part, o_first_offset, o_last_offset,
                     o_first_version, o_last_version);
            END IF;
            next_offsets[part] := o_last_offset + 1;
        END IF;

        RETURN NEXT;
        first_event := last_event + 1;
    END LOOP;

    UPDATE annals_partitions p SET next_offset = next_offsets[p.partition]
    WHERE p.partition = ANY (locked) AND p.next_offset <> next_offsets[p.partition];
END;
$$;
