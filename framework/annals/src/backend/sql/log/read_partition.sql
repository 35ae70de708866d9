-- $1 partition, $2 first offset, $3 limit: records, in the column order the engines'
-- row decoders read.
SELECT partition, "offset", stream_id, version, event_id, event_type,
       CAST(payload AS text), CAST(metadata AS text), recorded_at, last_in_append, redacted
FROM annals_events WHERE partition = $1 AND "offset" >= $2 ORDER BY "offset" LIMIT $3
