-- Retention: the scavenger truncates streams by appending `annals.StreamTruncated`
-- records (payload `{"stream": id, "before": version}`) to a stream of its own. Writing
-- one, by an append or by a follower copying it, redacts the named stream's records
-- below that version, as a deletion does (0008), in the same transaction.
--
-- How far each stream was truncated, so the scavenger skips what it already did.
-- Redactions are never undone, so a follower's truncation of the log leaves this as is.
CREATE TABLE annals_truncated_streams (
    stream_id text   COLLATE "C" PRIMARY KEY,
    before    bigint NOT NULL
);

-- What a redacted record's metadata keeps: its command id, if it had one.
CREATE FUNCTION annals_redacted_metadata(metadata json) RETURNS json LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN metadata->>'command_id' IS NULL THEN '{}'::json
                ELSE json_build_object('command_id', metadata->>'command_id') END
$$;

-- A truncation never redacts a deletion record: a hard deletion must stay hard.
CREATE FUNCTION annals_stream_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target text   := NEW.payload->>'stream';
    below  bigint := (NEW.payload->>'before')::bigint;
BEGIN
    UPDATE annals_events SET payload = 'null', redacted = true, metadata = annals_redacted_metadata(metadata)
    WHERE stream_id = target AND version < below AND NOT redacted
      AND event_type <> 'annals.StreamDeleted';
    INSERT INTO annals_truncated_streams (stream_id, before) VALUES (target, below)
    ON CONFLICT (stream_id) DO UPDATE
        SET before = greatest(annals_truncated_streams.before, excluded.before);
    RETURN NULL;
END;
$$;
-- Only a well-formed truncation counts: a redacted one, or one whose fields are not a
-- stream id and a whole number, changes nothing (as on SQLite).
CREATE TRIGGER annals_stream_truncated AFTER INSERT ON annals_events FOR EACH ROW
    WHEN (NEW.event_type = 'annals.StreamTruncated' AND NOT NEW.redacted
          AND json_typeof(NEW.payload->'stream') = 'string'
          AND (NEW.payload->>'before') ~ '^[0-9]{1,18}$')
    EXECUTE FUNCTION annals_stream_truncated();

-- annals_replicate as in 0006, taking each record's redaction flag (records the leader
-- had redacted arrive redacted) and redacting the records that arrive below a
-- truncation their stream already has.
DROP FUNCTION annals_replicate(integer, integer, bigint, text[], bigint[], uuid[], text[], text[], text[],
                               timestamptz[], boolean[], bigint[], uuid[], text[], bigint[], bigint[], bigint[],
                               bigint[]);
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
    e_redacted     boolean[],
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
         last_in_append, schema_version, redacted)
    SELECT r_partition, first_offset + r.n - 1, r.stream, r.version, r.id, r.type, r.payload::json,
           r.metadata::json, r.recorded_at, r.last, r.schema, r.redacted
    FROM unnest(e_stream, e_version, e_id, e_type, e_payload, e_metadata, e_recorded_at, e_last, e_schema,
                e_redacted)
             WITH ORDINALITY AS r(stream, version, id, type, payload, metadata, recorded_at, last, schema, redacted, n);

    -- A stream's truncation may have been copied from another partition before these
    -- records of it were: they are redacted as they arrive.
    UPDATE annals_events e SET payload = 'null', redacted = true, metadata = annals_redacted_metadata(e.metadata)
    FROM annals_truncated_streams t
    WHERE e.partition = r_partition AND e."offset" >= first_offset
      AND t.stream_id = e.stream_id AND e.version < t.before AND NOT e.redacted
      AND e.event_type <> 'annals.StreamDeleted';

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
