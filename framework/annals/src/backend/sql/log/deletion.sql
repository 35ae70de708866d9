-- $1 stream: the version of its latest deletion record, and whether it was hard.
SELECT version, hard FROM annals_deleted_streams WHERE stream_id = $1
