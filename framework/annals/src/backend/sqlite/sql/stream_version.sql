-- ?1 stream: its version, and whether it was hard-deleted.
SELECT max(version), (SELECT hard FROM annals_deleted_streams WHERE stream_id = ?1)
FROM annals_events WHERE stream_id = ?1
