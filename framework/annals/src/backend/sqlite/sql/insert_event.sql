INSERT INTO annals_events
    (partition, "offset", stream_id, version, event_id, event_type, payload, metadata, recorded_at, last_in_append,
     redacted)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
