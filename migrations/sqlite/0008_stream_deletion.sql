-- Stream deletion and redaction (see the book's data lifecycle chapter).
--
-- A redacted record keeps its partition, offset, stream, version, id, type and time,
-- so offsets stay gapless (I1) and versions contiguous (I2), but its payload is JSON
-- null and its metadata empty but for the command id, which is no personal data and
-- which a follower rebuilds the command's outcome from (I5 after a failover).
ALTER TABLE annals_events ADD COLUMN redacted INTEGER NOT NULL DEFAULT 0;

-- The latest deletion of each deleted stream: the version of its `annals.StreamDeleted`
-- record, and whether it was hard (the stream can never be written again).
CREATE TABLE annals_deleted_streams (
    stream_id TEXT    PRIMARY KEY,
    version   INTEGER NOT NULL,
    hard      INTEGER NOT NULL
) WITHOUT ROWID;

-- Deleting a stream is appending an `annals.StreamDeleted` record to it. Writing that
-- record, by an append or by a follower copying it, redacts every earlier record of the
-- stream and drops its snapshots, in the same transaction: so a follower redacts what
-- its leader redacted, in log order.
CREATE TRIGGER annals_stream_deleted AFTER INSERT ON annals_events
WHEN NEW.event_type = 'annals.StreamDeleted'
BEGIN
    UPDATE annals_events SET payload = 'null', redacted = 1,
        metadata = CASE WHEN json_type(metadata, '$.command_id') = 'text'
                        THEN json_object('command_id', json_extract(metadata, '$.command_id')) ELSE '{}' END
    WHERE stream_id = NEW.stream_id AND version < NEW.version AND redacted = 0;
    DELETE FROM annals_snapshots WHERE stream_id = NEW.stream_id;
    INSERT INTO annals_deleted_streams (stream_id, version, hard)
    VALUES (NEW.stream_id, NEW.version, coalesce(json_extract(NEW.payload, '$.hard'), 0) = 1)
    ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, hard = excluded.hard;
END;

-- A follower's truncation that removes a deletion record makes the stream's previous
-- deletion, if any, the latest again. What was redacted stays redacted.
CREATE TRIGGER annals_stream_deletion_truncated AFTER DELETE ON annals_events
WHEN OLD.event_type = 'annals.StreamDeleted'
BEGIN
    DELETE FROM annals_deleted_streams WHERE stream_id = OLD.stream_id AND version >= OLD.version;
    INSERT OR IGNORE INTO annals_deleted_streams (stream_id, version, hard)
    SELECT e.stream_id, e.version, coalesce(json_extract(e.payload, '$.hard'), 0) = 1
    FROM annals_events e
    WHERE e.stream_id = OLD.stream_id AND e.version < OLD.version AND e.event_type = 'annals.StreamDeleted'
    ORDER BY e.version DESC LIMIT 1;
END;
