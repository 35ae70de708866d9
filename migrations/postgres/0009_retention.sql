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

CREATE FUNCTION annals_stream_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target text   := NEW.payload->>'stream';
    below  bigint := (NEW.payload->>'before')::bigint;
BEGIN
    UPDATE annals_events SET payload = 'null', redacted = true,
        metadata = CASE WHEN metadata->>'command_id' IS NULL THEN '{}'::json
                        ELSE json_build_object('command_id', metadata->>'command_id') END
    WHERE stream_id = target AND version < below AND NOT redacted;
    INSERT INTO annals_truncated_streams (stream_id, before) VALUES (target, below)
    ON CONFLICT (stream_id) DO UPDATE
        SET before = greatest(annals_truncated_streams.before, excluded.before);
    RETURN NULL;
END;
$$;
CREATE TRIGGER annals_stream_truncated AFTER INSERT ON annals_events FOR EACH ROW
    WHEN (NEW.event_type = 'annals.StreamTruncated') EXECUTE FUNCTION annals_stream_truncated();
