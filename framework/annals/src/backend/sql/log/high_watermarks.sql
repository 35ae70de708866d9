-- One row per partition, in order: its next offset, NULL when it is empty. Each is one
-- index seek, whatever the log's size.
SELECT (SELECT max(e."offset") + 1 FROM annals_events e WHERE e.partition = p.partition)
FROM annals_partitions p ORDER BY p.partition
