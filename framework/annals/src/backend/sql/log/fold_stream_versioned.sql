-- The same on PostgreSQL, which keeps the schema version in a column of its own.
SELECT version, event_type, CAST(payload AS text), schema_version
FROM annals_events WHERE stream_id = $1 AND version >= $2 AND NOT redacted ORDER BY version
