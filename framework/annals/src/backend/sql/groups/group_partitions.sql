SELECT partition FROM annals_group_offsets WHERE group_name = $1
