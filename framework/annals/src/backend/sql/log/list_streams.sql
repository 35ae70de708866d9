-- Streams in id order: stream id, partition, version. The engine fills the holes: the
-- conditions of the listed range, whose bounds come first ($1 …), and the limit's
-- parameter, the last. A deleted stream is left out until it is written again.
SELECT e.stream_id, e.partition,
       (SELECT max(v.version) FROM annals_events v WHERE v.stream_id = e.stream_id)
FROM annals_events e WHERE e.version = 1{range}
  AND NOT EXISTS (SELECT 1 FROM annals_deleted_streams d WHERE d.stream_id = e.stream_id
                  AND d.version = (SELECT max(v.version) FROM annals_events v WHERE v.stream_id = e.stream_id))
ORDER BY e.stream_id LIMIT ${limit}
