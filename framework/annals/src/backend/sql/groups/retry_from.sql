-- Dead letter at offset $3 of stream $2 and those parked behind it, to be handled again.
UPDATE annals_dead_letters SET status = 'retry'
WHERE group_name = $1 AND stream_id = $2 AND "offset" >= $3
