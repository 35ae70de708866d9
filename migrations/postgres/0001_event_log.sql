-- The partitioned event log of annals (PostgreSQL).

-- One row: the store's identity and its fixed partition count.
CREATE TABLE annals_store (
    id              integer     PRIMARY KEY CHECK (id = 1),
    store_id        uuid        NOT NULL,
    partition_count integer     NOT NULL CHECK (partition_count > 0),
    leader_epoch    bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per partition (0 .. partition_count - 1).
CREATE TABLE annals_partitions (
    partition integer PRIMARY KEY
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

-- Appends a batch of appends in one transaction: one round trip, one WAL flush.
--
-- Append i is a_stream[i] .. a_count[i]; its events are the next a_count[i] entries
-- of the e_* arrays. a_expected: -1 any, -2 the stream exists, n >= 0 exactly n
-- (0: no stream). Every append is decided on its own, after the appends before it in
-- the batch, and answered with one row, in order; a failed check writes nothing for
-- that append and does not fail the others:
--   status 0 written, 1 duplicate command id (the original outcome), 2 wrong expected
--   version (o_actual), 3 command id used on another stream (o_other), 4 duplicate
--   event id (o_other).
--
-- Each partition written is locked with a transaction-scoped advisory lock in the
-- store's lock space (lock_space, partition), in ascending partition order: writers in
-- every process take a partition one at a time and never deadlock, and since the lock
-- is released only after the commit is visible, a partition's offsets become visible
-- in order (I1).
CREATE FUNCTION annals_append(
    lock_space  integer,
    a_stream    text[],
    a_partition integer[],
    a_expected  bigint[],
    a_command   uuid[],
    a_count     integer[],
    e_id        uuid[],
    e_check     boolean[],
    e_type      text[],
    e_payload   text[],
    e_metadata  text[]
) RETURNS TABLE (
    o_status        smallint,
    o_first_offset  bigint,
    o_last_offset   bigint,
    o_first_version bigint,
    o_last_version  bigint,
    o_actual        bigint,
    o_other         text
) LANGUAGE plpgsql
-- With array arguments the planner would otherwise re-plan every statement on every
-- call (custom plans look cheaper to it), which costs more than the statements.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    parts        integer[];
    nexts        bigint[];
    next_offsets bigint[];
    latest       timestamptz;
    stamp        timestamptz;
    part         integer;
    first_event  integer := 1;
    last_event   integer;
    current_v    bigint;
    expected     bigint;
    seen         integer;
    clash        uuid;
    -- Stream versions, updated as the batch's appends are admitted.
    b_streams    text[];
    b_versions   bigint[];
    -- Command ids stored before the batch, with their outcomes.
    k_command    uuid[];
    k_stream     text[];
    k_offset     bigint[];
    k_last       bigint[];
    k_version    bigint[];
    k_vlast      bigint[];
    -- Command ids admitted in this batch, and their index in the w_ arrays.
    b_commands   uuid[] := '{}';
    b_outcomes   integer[] := '{}';
    -- The admitted appends, written at the end with one INSERT.
    w_first      integer[] := '{}';
    w_count      integer[] := '{}';
    w_partition  integer[] := '{}';
    w_offset     bigint[] := '{}';
    w_stream     text[] := '{}';
    w_version    bigint[] := '{}';
    w_command    uuid[] := '{}';
BEGIN
    -- Lock the partitions, ascending, before anything is read: every read below runs
    -- in a snapshot taken after the previous writer of these partitions committed.
    PERFORM pg_advisory_xact_lock(lock_space, q.p)
    FROM (SELECT DISTINCT u.p FROM unnest(a_partition) AS u(p) ORDER BY u.p) AS q;

    SELECT array_agg(q.p), array_agg(q.next), max(q.stamp) INTO parts, nexts, latest
    FROM (SELECT u.p, coalesce(l."offset" + 1, 0) AS next, l.recorded_at AS stamp
          FROM (SELECT DISTINCT p FROM unnest(a_partition) AS d(p)) AS u
          LEFT JOIN LATERAL (SELECT e."offset", e.recorded_at FROM annals_events e
                             WHERE e.partition = u.p ORDER BY e."offset" DESC LIMIT 1) AS l ON true) AS q;
    FOR k IN 1 .. array_length(parts, 1) LOOP
        next_offsets[parts[k]] := nexts[k];
    END LOOP;
    -- recorded_at never goes back within a partition, whatever the clock does.
    stamp := greatest(clock_timestamp(), latest);

    SELECT array_agg(s.id), array_agg(coalesce(
               (SELECT max(e.version) FROM annals_events e WHERE e.stream_id = s.id), 0))
    INTO b_streams, b_versions
    FROM (SELECT DISTINCT id FROM unnest(a_stream) AS u(id)) AS s;

    SELECT array_agg(c.command_id), array_agg(c.stream_id), array_agg(c.first_offset),
           array_agg(c.last_offset), array_agg(c.first_version), array_agg(c.last_version)
    INTO k_command, k_stream, k_offset, k_last, k_version, k_vlast
    FROM annals_command_ids c WHERE c.command_id = ANY (a_command);

    FOR i IN 1 .. coalesce(array_length(a_stream, 1), 0) LOOP
        last_event := first_event + a_count[i] - 1;
        part := a_partition[i];
        o_status := 0; o_first_offset := NULL; o_last_offset := NULL;
        o_first_version := NULL; o_last_version := NULL; o_actual := NULL; o_other := NULL;

        IF a_command[i] IS NOT NULL THEN
            seen := array_position(b_commands, a_command[i]);
            IF seen IS NOT NULL THEN
                seen := b_outcomes[seen];
                o_other := w_stream[seen];
                o_first_offset := w_offset[seen];
                o_last_offset := w_offset[seen] + w_count[seen] - 1;
                o_first_version := w_version[seen] + 1;
                o_last_version := w_version[seen] + w_count[seen];
            ELSE
                seen := array_position(k_command, a_command[i]);
                IF seen IS NOT NULL THEN
                    o_other := k_stream[seen];
                    o_first_offset := k_offset[seen];
                    o_last_offset := k_last[seen];
                    o_first_version := k_version[seen];
                    o_last_version := k_vlast[seen];
                END IF;
            END IF;
            IF o_other IS NOT NULL THEN
                IF o_other = a_stream[i] THEN
                    o_status := 1; o_other := NULL;
                ELSE
                    o_status := 3;
                    o_first_offset := NULL; o_last_offset := NULL;
                    o_first_version := NULL; o_last_version := NULL;
                END IF;
            END IF;
        END IF;

        IF o_status = 0 THEN
            seen := array_position(b_streams, a_stream[i]);
            current_v := b_versions[seen];
            expected := a_expected[i];
            IF NOT (expected = -1 OR (expected = -2 AND current_v > 0) OR expected = current_v) THEN
                o_status := 2; o_actual := current_v;
            END IF;
        END IF;

        IF o_status = 0 AND e_check[first_event:last_event] @> ARRAY[true] THEN
            -- A client-chosen id may clash with a stored event or one admitted earlier
            -- in this batch.
            SELECT c.id INTO clash
            FROM unnest(e_id[first_event:last_event], e_check[first_event:last_event]) AS c(id, checked)
            WHERE c.checked AND (
                EXISTS (SELECT 1 FROM annals_events e WHERE e.event_id = c.id)
                OR EXISTS (SELECT 1 FROM unnest(w_first, w_count) AS w(first, count),
                                         generate_series(w.first, w.first + w.count - 1) AS g(k)
                           WHERE e_id[g.k] = c.id))
            LIMIT 1;
            IF FOUND THEN
                o_status := 4; o_other := clash::text;
            END IF;
        END IF;

        IF o_status = 0 THEN
            o_first_offset := next_offsets[part];
            o_last_offset := o_first_offset + a_count[i] - 1;
            o_first_version := current_v + 1;
            o_last_version := current_v + a_count[i];
            next_offsets[part] := o_last_offset + 1;
            b_versions[seen] := o_last_version;
            w_first := w_first || first_event;
            w_count := w_count || a_count[i];
            w_partition := w_partition || part;
            w_offset := w_offset || o_first_offset;
            w_stream := w_stream || a_stream[i];
            w_version := w_version || current_v;
            w_command := w_command || a_command[i];
            IF a_command[i] IS NOT NULL THEN
                b_commands := b_commands || a_command[i];
                b_outcomes := b_outcomes || array_length(w_first, 1);
            END IF;
        END IF;

        RETURN NEXT;
        first_event := last_event + 1;
    END LOOP;

    INSERT INTO annals_events
        (partition, "offset", stream_id, version, event_id, event_type, payload, metadata, recorded_at)
    SELECT w.part, w.first_offset + g.n, w.stream, w.version + g.n + 1,
           e_id[w.first + g.n], e_type[w.first + g.n], e_payload[w.first + g.n]::json,
           e_metadata[w.first + g.n]::json, stamp
    FROM unnest(w_first, w_count, w_partition, w_offset, w_stream, w_version)
             AS w(first, count, part, first_offset, stream, version)
         CROSS JOIN LATERAL generate_series(0, w.count - 1) AS g(n);

    IF array_length(b_commands, 1) > 0 THEN
        INSERT INTO annals_command_ids
        SELECT w.command, w.stream, w.part, w.first_offset, w.first_offset + w.count - 1,
               w.version + 1, w.version + w.count
        FROM unnest(w_command, w_count, w_partition, w_offset, w_stream, w_version)
                 AS w(command, count, part, first_offset, stream, version)
        WHERE w.command IS NOT NULL;
    END IF;
END;
$$;
