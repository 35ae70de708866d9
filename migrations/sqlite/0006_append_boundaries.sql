-- Where each append ends, so a follower ships whole appends without guessing: 1 on the
-- last record of an append, 0 on the others. A fetch ends on an append's last record.
--
-- Records written before this migration get the best the log can tell: a record is an
-- append's last unless the next record of its partition is of the same stream and was
-- committed with it (same recorded_at). That may join two appends of one stream that
-- shared a group commit into one, which only makes a follower ship them together; it
-- never splits an append.
ALTER TABLE annals_events ADD COLUMN last_in_append INTEGER NOT NULL DEFAULT 1;
UPDATE annals_events SET last_in_append = 0
WHERE EXISTS (SELECT 1 FROM annals_events n
              WHERE n.partition = annals_events.partition
                AND n."offset" = annals_events."offset" + 1
                AND n.stream_id = annals_events.stream_id
                AND n.recorded_at = annals_events.recorded_at);

-- How a group commits ('transactional' or 'at_least_once'), as its members last said;
-- and, on a follower, the leader a group's offsets and dead letters are copied from
-- (NULL for a group of this store's own). Copied groups let at-least-once consumers
-- resume after a failover where they were, instead of from offset 0.
ALTER TABLE annals_groups ADD COLUMN commit_mode TEXT;
ALTER TABLE annals_groups ADD COLUMN mirrored_from TEXT;
