-- The same on PostgreSQL, which keeps the schema version in a column of its own. No
-- ORDER BY: the rows come in the order the plan finds them (on an append-only table,
-- nearly always version order), and the caller puts them in order. A sort here would
-- hold every row back until the last was read, and when the stream is most of the
-- table the planner sorts a sequential scan.
SELECT version, event_type, CAST(payload AS text), schema_version
FROM annals_events WHERE stream_id = $1 AND version >= $2 AND NOT redacted
