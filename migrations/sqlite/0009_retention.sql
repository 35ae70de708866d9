-- Retention: the scavenger truncates streams by appending `annals.StreamTruncated`
-- records (payload `{"stream": id, "before": version}`) to a stream of its own. Writing
-- one, by an append or by a follower copying it, redacts the named stream's records
-- below that version, as a deletion does (0008), in the same transaction.
--
-- How far each stream was truncated, so the scavenger skips what it already did.
-- Redactions are never undone, so a follower's truncation of the log leaves this as is.
CREATE TABLE annals_truncated_streams (
    stream_id TEXT    PRIMARY KEY,
    before    INTEGER NOT NULL
) WITHOUT ROWID;

-- Only a well-formed truncation counts: a redacted one, or one whose fields are not a
-- stream id and a whole number, changes nothing. A truncation never redacts a deletion
-- record: a hard deletion must stay hard.
CREATE TRIGGER annals_stream_truncated AFTER INSERT ON annals_events
WHEN NEW.event_type = 'annals.StreamTruncated' AND NEW.redacted = 0
     AND json_type(NEW.payload, '$.stream') = 'text' AND json_type(NEW.payload, '$.before') = 'integer'
BEGIN
    UPDATE annals_events SET payload = 'null', redacted = 1,
        metadata = CASE WHEN json_type(metadata, '$.command_id') = 'text'
                        THEN json_object('command_id', json_extract(metadata, '$.command_id')) ELSE '{}' END
    WHERE stream_id = json_extract(NEW.payload, '$.stream')
      AND version < json_extract(NEW.payload, '$.before') AND redacted = 0
      AND event_type <> 'annals.StreamDeleted';
    INSERT INTO annals_truncated_streams (stream_id, before)
    VALUES (json_extract(NEW.payload, '$.stream'), json_extract(NEW.payload, '$.before'))
    ON CONFLICT (stream_id) DO UPDATE SET before = max(before, excluded.before);
END;
