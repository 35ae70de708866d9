UPDATE annals_groups SET generation = $2 WHERE group_name = $1
