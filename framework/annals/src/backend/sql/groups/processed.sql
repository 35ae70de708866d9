SELECT 1 FROM annals_processed WHERE group_name = $1 AND event_id = $2
