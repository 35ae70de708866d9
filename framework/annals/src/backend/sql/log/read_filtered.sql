-- Records of one partition in an offset range with one key (a category or an event
-- type), in the column order the engines' row decoders read; see `read_filtered` in
-- `sql/mod.rs` for the placeholders.
SELECT partition, "offset", stream_id, version, event_id, event_type,
       CAST(payload AS text), CAST(metadata AS text), recorded_at, last_in_append, redacted
FROM annals_events
WHERE partition = $1 AND {key} = $2 AND "offset" >= $3 AND "offset" < $4{types}
ORDER BY "offset" LIMIT ${limit}
