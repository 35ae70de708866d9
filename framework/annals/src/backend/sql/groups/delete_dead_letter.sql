DELETE FROM annals_dead_letters WHERE id = $1
