SELECT max(version) FROM annals_events WHERE stream_id = ?
