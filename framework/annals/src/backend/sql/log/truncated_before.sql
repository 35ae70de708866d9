-- $1 stream: the version below which the scavenger truncated it.
SELECT before FROM annals_truncated_streams WHERE stream_id = $1
