-- Timers (deadlines and scheduled commands) are streams of the reserved category
-- `annals.timer`: a `TimerScheduled` record, then one `TimerFired` or `TimerCancelled`.
-- This index holds the timers that have neither fired nor been cancelled (streams whose
-- only record is a `TimerScheduled`), by partition
-- and due time (microseconds since the Unix epoch, the record's `due_at_us`). Triggers
-- keep it as the log is written, in the writing transaction: by appends, by records a
-- follower replicates, and by a follower's truncation. So it always agrees with the
-- log, on every node, and survives a failover with it.
CREATE TABLE annals_timers (
    stream_id TEXT    PRIMARY KEY,
    partition INTEGER NOT NULL,
    due_at_us INTEGER NOT NULL
);
CREATE INDEX annals_timers_due ON annals_timers (partition, due_at_us);

CREATE TRIGGER annals_timer_scheduled AFTER INSERT ON annals_events
WHEN substr(NEW.stream_id, 1, 13) = 'annals.timer-' AND NEW.version = 1
     AND NEW.event_type = 'TimerScheduled'
BEGIN
    INSERT OR IGNORE INTO annals_timers (stream_id, partition, due_at_us)
    SELECT NEW.stream_id, NEW.partition, json_extract(NEW.payload, '$.due_at_us')
    WHERE json_type(NEW.payload, '$.due_at_us') = 'integer';
END;

CREATE TRIGGER annals_timer_ended AFTER INSERT ON annals_events
WHEN substr(NEW.stream_id, 1, 13) = 'annals.timer-' AND NEW.version > 1
BEGIN
    DELETE FROM annals_timers WHERE stream_id = NEW.stream_id;
END;

-- A truncated timer is pending again exactly when its `TimerScheduled` record is now
-- the last record of its stream.
CREATE TRIGGER annals_timer_truncated AFTER DELETE ON annals_events
WHEN substr(OLD.stream_id, 1, 13) = 'annals.timer-'
BEGIN
    DELETE FROM annals_timers WHERE stream_id = OLD.stream_id;
    INSERT OR IGNORE INTO annals_timers (stream_id, partition, due_at_us)
    SELECT e.stream_id, e.partition, json_extract(e.payload, '$.due_at_us')
    FROM annals_events e
    WHERE e.stream_id = OLD.stream_id AND e.version = 1 AND e.event_type = 'TimerScheduled'
      AND json_type(e.payload, '$.due_at_us') = 'integer'
      AND NOT EXISTS (SELECT 1 FROM annals_events later
                      WHERE later.stream_id = e.stream_id AND later.version > 1);
END;
