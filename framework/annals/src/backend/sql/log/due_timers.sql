-- $1 partition, $2 due by (µs since the Unix epoch), $3 limit: the pending timers of
-- the partition due by then, soonest first: stream id, due time.
SELECT stream_id, due_at_us FROM annals_timers
WHERE partition = $1 AND due_at_us <= $2
ORDER BY due_at_us, stream_id
LIMIT $3
