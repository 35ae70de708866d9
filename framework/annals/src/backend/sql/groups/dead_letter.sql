SELECT id, group_name, partition, "offset", stream_id, event_id, event_type, status, error, attempts, created_at
FROM annals_dead_letters WHERE id = $1
