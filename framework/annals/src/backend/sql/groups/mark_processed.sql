INSERT INTO annals_processed (group_name, event_id) VALUES ($1, $2)
ON CONFLICT (group_name, event_id) DO NOTHING
