-- A retried dead letter $2 of group $1 failed again: error $3, $4 more attempts.
UPDATE annals_dead_letters SET status = 'failed', error = $3, attempts = attempts + $4
WHERE group_name = $1 AND id = $2
