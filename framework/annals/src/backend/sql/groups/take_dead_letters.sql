UPDATE annals_dead_letters SET group_name = $1 WHERE group_name = $2
