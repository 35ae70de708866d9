INSERT INTO annals_dead_letters
    (group_name, partition, "offset", stream_id, event_id, event_type, status, error, attempts, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
