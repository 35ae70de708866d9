SELECT partition, committed, owner, paused, stopped_reason FROM annals_group_offsets
WHERE group_name = $1 ORDER BY partition
