-- The first offset of partition $1 written at or after $2 (µs); recorded_at never goes
-- back within a partition.
SELECT min("offset") FROM annals_events WHERE partition = $1 AND {recorded_since}
