SELECT 1 FROM annals_events WHERE event_id = ?
