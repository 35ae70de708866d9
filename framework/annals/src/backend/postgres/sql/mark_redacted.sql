-- $1 partition, $2 offsets: records a follower copied as its leader had redacted them.
UPDATE annals_events SET redacted = true WHERE partition = $1 AND "offset" = ANY ($2)
