SELECT id, "offset", stream_id, status FROM annals_dead_letters
WHERE group_name = $1 AND partition = $2 ORDER BY "offset"
