-- $1 stream, $2 first version, $3 limit: what a fold is shown, in version order, with
-- the metadata to find the schema version in. Redacted records carry nothing to fold;
-- a stream deletion record that follows them tells the fold to start again.
SELECT version, event_type, CAST(payload AS text), CAST(metadata AS text)
FROM annals_events WHERE stream_id = $1 AND version >= $2 AND NOT redacted ORDER BY version LIMIT $3
