-- Timers (deadlines and scheduled commands) are streams of the reserved category
-- `annals.timer`: a `TimerScheduled` record, then one `TimerFired` or `TimerCancelled`.
-- This index holds the timers that have neither fired nor been cancelled (streams whose
-- only record is a `TimerScheduled`), by partition
-- and due time (microseconds since the Unix epoch, the record's `due_at_us`). A trigger
-- keeps it as the log is written, in the writing transaction: by appends, by records a
-- follower replicates, and by a follower's truncation. So it always agrees with the
-- log, on every node, and survives a failover with it.
CREATE TABLE annals_timers (
    stream_id text   COLLATE "C" PRIMARY KEY,
    partition integer NOT NULL,
    due_at_us bigint  NOT NULL
);
CREATE INDEX annals_timers_due ON annals_timers (partition, due_at_us);

CREATE FUNCTION annals_index_timer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.version > 1 THEN
            DELETE FROM annals_timers WHERE stream_id = NEW.stream_id;
        ELSIF NEW.event_type = 'TimerScheduled' AND (NEW.payload->>'due_at_us') ~ '^-?[0-9]{1,18}$' THEN
            INSERT INTO annals_timers (stream_id, partition, due_at_us)
            VALUES (NEW.stream_id, NEW.partition, (NEW.payload->>'due_at_us')::bigint)
            ON CONFLICT DO NOTHING;
        END IF;
        RETURN NULL;
    END IF;
    -- A follower's truncation: the timer is pending again exactly when its
    -- `TimerScheduled` record is now the last record of its stream.
    DELETE FROM annals_timers WHERE stream_id = OLD.stream_id;
    INSERT INTO annals_timers (stream_id, partition, due_at_us)
    SELECT e.stream_id, e.partition, (e.payload->>'due_at_us')::bigint
    FROM annals_events e
    WHERE e.stream_id = OLD.stream_id AND e.version = 1 AND e.event_type = 'TimerScheduled'
      AND (e.payload->>'due_at_us') ~ '^-?[0-9]{1,18}$'
      AND NOT EXISTS (SELECT 1 FROM annals_events later
                      WHERE later.stream_id = e.stream_id AND later.version > 1)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

-- The conditions are checked as each row is written; only timer records queue the
-- function.
CREATE TRIGGER annals_timers_written AFTER INSERT ON annals_events FOR EACH ROW
    WHEN (left(NEW.stream_id, 13) = 'annals.timer-') EXECUTE FUNCTION annals_index_timer();
CREATE TRIGGER annals_timers_truncated AFTER DELETE ON annals_events FOR EACH ROW
    WHEN (left(OLD.stream_id, 13) = 'annals.timer-') EXECUTE FUNCTION annals_index_timer();
