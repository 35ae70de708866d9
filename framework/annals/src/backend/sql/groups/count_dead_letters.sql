SELECT count(*) FROM annals_dead_letters WHERE group_name = $1
