-- A batch of appends whose outcomes do not depend on each other, decided as
-- annals_append decides them (statuses, order of the checks, one recorded_at for the
-- batch) in one statement instead of a loop. A writer calls it when the batch's
-- streams are distinct, its command ids are distinct and no event id was chosen by
-- the client: then an append's outcome depends on the others' only through its
-- partition's offsets, which a running sum over the admitted appends gives. Those are
-- the batches of a repository's commands (one command at a time per aggregate);
-- annals_append takes the rest. The loop's per-append bookkeeping in PL/pgSQL cost
-- more than the batch's statements (the book's PostgreSQL chapter, One round trip per
-- batch).
--
-- Arguments as annals_append's, without e_check; answers as annals_append does.
CREATE FUNCTION annals_append_set(
    lock_space  integer,
    a_stream    text[],
    a_partition integer[],
    a_expected  bigint[],
    a_command   uuid[],
    a_count     integer[],
    e_id        uuid[],
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
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    -- The partitions' locks first, ascending: the statement below runs in a snapshot
    -- taken after the previous writer of these partitions committed.
    PERFORM pg_advisory_xact_lock(lock_space, q.p)
    FROM (SELECT DISTINCT u.p FROM unnest(a_partition) AS u(p) ORDER BY u.p) AS q;

    RETURN QUERY
    WITH batch AS (
        -- Each append, with the number of the batch's events before its own.
        SELECT u.n, u.stream, u.part, u.expected, u.command, u.events,
               (sum(u.events) OVER (ORDER BY u.n) - u.events)::integer AS before
        FROM unnest(a_stream, a_partition, a_expected, a_command, a_count)
             WITH ORDINALITY AS u(stream, part, expected, command, events, n)
    ), ends AS (
        -- Each partition's next offset and newest record's time.
        SELECT p.part, coalesce(l."offset" + 1, 0) AS next, l.recorded_at AS latest
        FROM (SELECT DISTINCT b.part FROM batch b) AS p
        LEFT JOIN LATERAL (SELECT e."offset", e.recorded_at FROM annals_events e
                           WHERE e.partition = p.part ORDER BY e."offset" DESC LIMIT 1) AS l ON true
    ), decided AS (
        SELECT b.*, v.version, k.stream_id AS done_stream, k.first_offset AS done_first_offset,
               k.last_offset AS done_last_offset, k.first_version AS done_first_version,
               k.last_version AS done_last_version,
               CASE WHEN k.command_id IS NOT NULL THEN CASE WHEN k.stream_id = b.stream THEN 1 ELSE 3 END
                    WHEN d.stream_id IS NOT NULL THEN 5
                    WHEN b.expected = -1 OR (b.expected = -2 AND v.version > 0) OR b.expected = v.version THEN 0
                    ELSE 2 END AS status
        FROM batch b
        CROSS JOIN LATERAL (SELECT coalesce(max(e.version), 0) AS version
                            FROM annals_events e WHERE e.stream_id = b.stream) AS v
        -- Lookups by key, one per append: as joins, a plan made while the tables were
        -- small would scan them whole for as long as the session lasts.
        LEFT JOIN LATERAL (SELECT d.stream_id FROM annals_deleted_streams d
                           WHERE d.stream_id = b.stream AND d.hard LIMIT 1) AS d ON true
        LEFT JOIN LATERAL (SELECT k.* FROM annals_command_ids k
                           WHERE k.command_id = b.command LIMIT 1) AS k ON true
    ), placed AS (
        -- An admitted append's records follow those admitted before it in its partition.
        SELECT d.*, ends.next + coalesce(sum(d.events) FILTER (WHERE d.status = 0) OVER (
                   PARTITION BY d.part ORDER BY d.n ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                   AS first_offset
        FROM decided d JOIN ends ON ends.part = d.part
    ), stamp AS (
        -- recorded_at never goes back within a partition, whatever the clock does.
        SELECT greatest(clock_timestamp(), max(ends.latest)) AS at FROM ends
    ), written AS (
        INSERT INTO annals_events
            (partition, "offset", stream_id, version, event_id, event_type, payload, metadata, recorded_at,
             last_in_append, schema_version)
        SELECT p.part, p.first_offset + g.k, p.stream, p.version + g.k + 1,
               e_id[p.before + g.k + 1], e_type[p.before + g.k + 1], e_payload[p.before + g.k + 1]::json,
               e_metadata[p.before + g.k + 1]::json, stamp.at, g.k = p.events - 1, e_schema[p.before + g.k + 1]
        FROM placed p CROSS JOIN stamp CROSS JOIN LATERAL generate_series(0, p.events - 1) AS g(k)
        WHERE p.status = 0
    ), remembered AS (
        INSERT INTO annals_command_ids
        SELECT p.command, p.stream, p.part, p.first_offset, p.first_offset + p.events - 1,
               p.version + 1, p.version + p.events
        FROM placed p
        WHERE p.status = 0 AND p.command IS NOT NULL
    )
    SELECT p.status::smallint,
           CASE p.status WHEN 0 THEN p.first_offset WHEN 1 THEN p.done_first_offset END,
           CASE p.status WHEN 0 THEN p.first_offset + p.events - 1 WHEN 1 THEN p.done_last_offset END,
           CASE p.status WHEN 0 THEN p.version + 1 WHEN 1 THEN p.done_first_version END,
           CASE p.status WHEN 0 THEN p.version + p.events WHEN 1 THEN p.done_last_version END,
           CASE WHEN p.status IN (2, 5) THEN p.version END,
           CASE WHEN p.status = 3 THEN p.done_stream::text END
    FROM placed p
    ORDER BY p.n;
END;
$$;
