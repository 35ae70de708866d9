-- Where each append ends, so a follower ships whole appends without guessing: true on
-- the last record of an append. A fetch ends on an append's last record.
--
-- Records written before this migration get the best the log can tell: a record is an
-- append's last unless the next record of its partition is of the same stream and was
-- committed with it (same recorded_at). That may join two appends of one stream that
-- shared a group commit into one, which only makes a follower ship them together; it
-- never splits an append.
ALTER TABLE annals_events ADD COLUMN last_in_append boolean NOT NULL DEFAULT true;
UPDATE annals_events e SET last_in_append = false
FROM annals_events n
WHERE n.partition = e.partition AND n."offset" = e."offset" + 1
  AND n.stream_id = e.stream_id AND n.recorded_at = e.recorded_at;

-- How a group commits ('transactional' or 'at_least_once'), as its members last said;
-- and, on a follower, the leader a group's offsets and dead letters are copied from
-- (NULL for a group of this store's own). Copied groups let at-least-once consumers
-- resume after a failover where they were, instead of from offset 0.
ALTER TABLE annals_groups ADD COLUMN commit_mode text, ADD COLUMN mirrored_from text;

-- Each event's schema version is written by the store, which has it in hand, instead
-- of being computed by PostgreSQL from the metadata on every insert (migration 0005's
-- generated column parsed the metadata twice per event: about a sixth of an append's
-- cost). The values computed so far stay; the store writes the same rule's value:
-- the metadata key `schema_version` when it is a JSON integer of at least 0 (at most
-- 4294967295), NULL otherwise.
ALTER TABLE annals_events ALTER COLUMN schema_version DROP EXPRESSION;

-- Writes records shipped from a leader, verbatim, into one partition: the records
-- e_* (offsets first_offset, first_offset + 1, …) and the command ids c_* rebuilt
-- from their metadata. Under the partition's advisory lock, the same one appends take,
-- and with the store row locked against a promotion, it checks that this store is a
-- follower and that the records continue the partition exactly. Answers one row:
-- status 0 written, 1 not a follower (nothing written), 2 the partition's next offset
-- is o_next, not first_offset (nothing written).
CREATE FUNCTION annals_replicate(
    lock_space     integer,
    r_partition    integer,
    first_offset   bigint,
    e_stream       text[],
    e_version      bigint[],
    e_id           uuid[],
    e_type         text[],
    e_payload      text[],
    e_metadata     text[],
    e_recorded_at  timestamptz[],
    e_last         boolean[],
    e_schema       bigint[],
    c_command      uuid[],
    c_stream       text[],
    c_first_offset bigint[],
    c_last_offset  bigint[],
    c_first        bigint[],
    c_last         bigint[]
) RETURNS TABLE (o_status smallint, o_next bigint) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_space, r_partition);
    IF (SELECT s.leader_url FROM annals_store s FOR SHARE) IS NULL THEN
        o_status := 1;
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT coalesce(max(e."offset") + 1, 0) INTO o_next
    FROM annals_events e WHERE e.partition = r_partition;
    IF o_next <> first_offset THEN
        o_status := 2;
        RETURN NEXT;
        RETURN;
    END IF;

    INSERT INTO annals_events
        (partition, "offset", stream_id, version, event_id, event_type, payload, metadata, recorded_at,
         last_in_append, schema_version)
    SELECT r_partition, first_offset + r.n - 1, r.stream, r.version, r.id, r.type, r.payload::json,
           r.metadata::json, r.recorded_at, r.last, r.schema
    FROM unnest(e_stream, e_version, e_id, e_type, e_payload, e_metadata, e_recorded_at, e_last, e_schema)
             WITH ORDINALITY AS r(stream, version, id, type, payload, metadata, recorded_at, last, schema, n);

    INSERT INTO annals_command_ids
        (command_id, stream_id, partition, first_offset, last_offset, first_version, last_version)
    SELECT c.command, c.stream, r_partition, c.first_offset, c.last_offset, c.first, c.last
    FROM unnest(c_command, c_stream, c_first_offset, c_last_offset, c_first, c_last)
             AS c(command, stream, first_offset, last_offset, first, last);

    o_status := 0;
    o_next := first_offset + coalesce(array_length(e_id, 1), 0);
    RETURN NEXT;
END;
$$;

-- annals_append as in 0001, taking the events' schema versions and marking each
-- append's last record.
DROP FUNCTION annals_append(integer, text[], integer[], bigint[], uuid[], integer[], uuid[], boolean[], text[], text[], text[]);
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
