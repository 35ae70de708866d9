-- $1 stream id, $2 version, $3 schema version, $4 state (NULL: a tombstone), $5 time (µs).
INSERT INTO annals_snapshots (stream_id, version, schema_version, state, taken_at) VALUES ($1, $2, $3, $4, $5)
