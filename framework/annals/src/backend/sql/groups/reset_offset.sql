UPDATE annals_group_offsets SET committed = $3, updated_at = {now} WHERE group_name = $1 AND partition = $2
