UPDATE annals_group_offsets SET paused = $3, stopped_reason = NULL WHERE group_name = $1 AND partition = $2
