-- $1 partition: when its soonest pending timer is due (NULL when it has none).
SELECT min(due_at_us) FROM annals_timers WHERE partition = $1
