-- Records of stream $2 marked for retry behind offset $3 wait again behind a failed one.
UPDATE annals_dead_letters SET status = 'parked'
WHERE group_name = $1 AND stream_id = $2 AND status = 'retry' AND "offset" > $3
