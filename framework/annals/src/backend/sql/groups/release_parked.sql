-- The records of stream $2 parked behind offset $3 are handed to the group again.
UPDATE annals_dead_letters SET status = 'retry'
WHERE group_name = $1 AND stream_id = $2 AND "offset" > $3 AND status = 'parked'
