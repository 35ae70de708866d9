-- One append, decided as annals_append decides it (statuses, order of the checks, one
-- recorded_at for its records), in the statements a single append needs: a lookup
-- each by primary key, without the arrays, the loop and the batch's bookkeeping.
-- A writer calls it when its batch holds a single append, which is every append of a
-- lone appender. Inside the server it costs about half as much as annals_append for
-- the same append (the book's PostgreSQL chapter, One round trip per batch).
--
-- The append is a_stream .. e_*; answers one row as annals_append does for it.
CREATE FUNCTION annals_append_one(
    lock_space  integer,
    a_stream    text,
    a_partition integer,
    a_expected  bigint,
    a_command   uuid,
    e_id        uuid[],
    e_check     boolean[],
    e_type      text[],
    e_payload   text[],
    e_metadata  text[],
    e_schema    bigint[],
    OUT o_status        smallint,
    OUT o_first_offset  bigint,
    OUT o_last_offset   bigint,
    OUT o_first_version bigint,
    OUT o_last_version  bigint,
    OUT o_actual        bigint,
    OUT o_other         text
) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    events  integer := array_length(e_id, 1);
    current bigint;
    latest  timestamptz;
    stamp   timestamptz;
BEGIN
    -- The partition's lock first: every read below sees its previous writer's commit.
    PERFORM pg_advisory_xact_lock(lock_space, a_partition);

    IF a_command IS NOT NULL THEN
        SELECT c.stream_id, c.first_offset, c.last_offset, c.first_version, c.last_version
        INTO o_other, o_first_offset, o_last_offset, o_first_version, o_last_version
        FROM annals_command_ids c WHERE c.command_id = a_command;
        IF FOUND THEN
            IF o_other = a_stream THEN
                o_status := 1; o_other := NULL;
            ELSE
                o_status := 3;
                o_first_offset := NULL; o_last_offset := NULL;
                o_first_version := NULL; o_last_version := NULL;
            END IF;
            RETURN;
        END IF;
    END IF;

    SELECT coalesce(max(e.version), 0) INTO current FROM annals_events e WHERE e.stream_id = a_stream;
    IF EXISTS (SELECT 1 FROM annals_deleted_streams d WHERE d.stream_id = a_stream AND d.hard) THEN
        o_status := 5; o_actual := current;
        RETURN;
    END IF;
    IF NOT (a_expected = -1 OR (a_expected = -2 AND current > 0) OR a_expected = current) THEN
        o_status := 2; o_actual := current;
        RETURN;
    END IF;

    IF e_check @> ARRAY[true] THEN
        SELECT c.id::text INTO o_other
        FROM unnest(e_id, e_check) AS c(id, checked)
        WHERE c.checked AND EXISTS (SELECT 1 FROM annals_events e WHERE e.event_id = c.id)
        LIMIT 1;
        IF FOUND THEN
            o_status := 4;
            RETURN;
        END IF;
    END IF;

    SELECT e."offset" + 1, e.recorded_at INTO o_first_offset, latest
    FROM annals_events e WHERE e.partition = a_partition ORDER BY e."offset" DESC LIMIT 1;
    o_status := 0;
    o_first_offset := coalesce(o_first_offset, 0);
    o_last_offset := o_first_offset + events - 1;
    o_first_version := current + 1;
    o_last_version := current + events;
    -- recorded_at never goes back within a partition, whatever the clock does.
    stamp := greatest(clock_timestamp(), latest);

    INSERT INTO annals_events
        (partition, "offset", stream_id, version, event_id, event_type, payload, metadata, recorded_at,
         last_in_append, schema_version)
    SELECT a_partition, o_first_offset + g.n, a_stream, o_first_version + g.n,
           e_id[g.n + 1], e_type[g.n + 1], e_payload[g.n + 1]::json, e_metadata[g.n + 1]::json, stamp,
           g.n = events - 1, e_schema[g.n + 1]
    FROM generate_series(0, events - 1) AS g(n);

    IF a_command IS NOT NULL THEN
        INSERT INTO annals_command_ids
        VALUES (a_command, a_stream, a_partition, o_first_offset, o_last_offset, o_first_version, o_last_version);
    END IF;
END;
$$;
