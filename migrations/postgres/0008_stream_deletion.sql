-- Stream deletion and redaction (see the book's data lifecycle chapter).
--
-- A redacted record keeps its partition, offset, stream, version, id, type and time,
-- so offsets stay gapless (I1) and versions contiguous (I2), but its payload is JSON
-- null and its metadata empty but for the command id, which is no personal data and
-- which a follower rebuilds the command's outcome from (I5 after a failover).
ALTER TABLE annals_events ADD COLUMN redacted boolean NOT NULL DEFAULT false;

-- The latest deletion of each deleted stream: the version of its `annals.StreamDeleted`
-- record, and whether it was hard (the stream can never be written again).
CREATE TABLE annals_deleted_streams (
    stream_id text    COLLATE "C" PRIMARY KEY,
    version   bigint  NOT NULL,
    hard      boolean NOT NULL
);

-- Deleting a stream is appending an `annals.StreamDeleted` record to it. Writing that
-- record, by an append or by a follower copying it, redacts every earlier record of the
-- stream and drops its snapshots, in the same transaction: so a follower redacts what
-- its leader redacted, in log order. A follower's truncation that removes a deletion
-- record makes the stream's previous deletion, if any, the latest again; what was
-- redacted stays redacted.
CREATE FUNCTION annals_stream_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE annals_events SET payload = 'null', redacted = true,
            metadata = CASE WHEN metadata->>'command_id' IS NULL THEN '{}'::json
                            ELSE json_build_object('command_id', metadata->>'command_id') END
        WHERE stream_id = NEW.stream_id AND version < NEW.version AND NOT redacted;
        DELETE FROM annals_snapshots WHERE stream_id = NEW.stream_id;
        INSERT INTO annals_deleted_streams (stream_id, version, hard)
        VALUES (NEW.stream_id, NEW.version, coalesce((NEW.payload->>'hard')::boolean, false))
        ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, hard = excluded.hard;
    ELSE
        DELETE FROM annals_deleted_streams WHERE stream_id = OLD.stream_id AND version >= OLD.version;
        INSERT INTO annals_deleted_streams (stream_id, version, hard)
        SELECT e.stream_id, e.version, coalesce((e.payload->>'hard')::boolean, false)
        FROM annals_events e
        WHERE e.stream_id = OLD.stream_id AND e.version < OLD.version
          AND e.event_type = 'annals.StreamDeleted'
        ORDER BY e.version DESC LIMIT 1
        ON CONFLICT (stream_id) DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER annals_stream_deleted AFTER INSERT ON annals_events FOR EACH ROW
    WHEN (NEW.event_type = 'annals.StreamDeleted') EXECUTE FUNCTION annals_stream_deleted();
CREATE TRIGGER annals_stream_deletion_truncated AFTER DELETE ON annals_events FOR EACH ROW
    WHEN (OLD.event_type = 'annals.StreamDeleted') EXECUTE FUNCTION annals_stream_deleted();

-- annals_append as in 0006, refusing appends to a hard-deleted stream (status 5, with
-- the stream's version in o_actual).
CREATE OR REPLACE FUNCTION annals_append(
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
    e_metadata  text[],
    e_schema    bigint[]
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
    b_hard       boolean[];
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
               (SELECT max(e.version) FROM annals_events e WHERE e.stream_id = s.id), 0)),
           array_agg(coalesce(
               (SELECT d.hard FROM annals_deleted_streams d WHERE d.stream_id = s.id), false))
    INTO b_streams, b_versions, b_hard
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
            IF b_hard[seen] THEN
                o_status := 5; o_actual := current_v;
            ELSIF NOT (expected = -1 OR (expected = -2 AND current_v > 0) OR expected = current_v) THEN
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
            -- A hard deletion closes the stream to the appends after it in the batch.
            IF e_type[last_event] = 'annals.StreamDeleted'
               AND coalesce((e_payload[last_event]::json->>'hard')::boolean, false) THEN
                b_hard[seen] := true;
            END IF;
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
        (partition, "offset", stream_id, version, event_id, event_type, payload, metadata, recorded_at,
         last_in_append, schema_version)
    SELECT w.part, w.first_offset + g.n, w.stream, w.version + g.n + 1,
           e_id[w.first + g.n], e_type[w.first + g.n], e_payload[w.first + g.n]::json,
           e_metadata[w.first + g.n]::json, stamp, g.n = w.count - 1, e_schema[w.first + g.n]
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
