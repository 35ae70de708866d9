-- $1 stream, $2 µs since the epoch: its first version written at or after then.
SELECT min(version) FROM annals_events WHERE stream_id = $1 AND {recorded_since}
