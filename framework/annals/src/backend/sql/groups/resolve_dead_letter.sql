DELETE FROM annals_dead_letters WHERE group_name = $1 AND id = $2
