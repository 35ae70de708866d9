-- The same as fold_stream_versioned, in version order: for a fold whose rows did not
-- come in order.
SELECT version, event_type, CAST(payload AS text), schema_version
FROM annals_events WHERE stream_id = $1 AND version >= $2 AND NOT redacted ORDER BY version
