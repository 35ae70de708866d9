-- $1 stream, $2 first version, $3 limit: records, in the column order the engines' row
-- decoders read.
SELECT partition, "offset", stream_id, version, event_id, event_type,
       CAST(payload AS text), CAST(metadata AS text), recorded_at, last_in_append, redacted
FROM annals_events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3
