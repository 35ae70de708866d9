-- The newest live snapshot of stream $1 at or before version $2, of schema version $3.
SELECT s.seq, s.version, s.schema_version, s.state
FROM annals_snapshots s
WHERE s.stream_id = $1 AND s.version <= $2 AND s.schema_version = $3 AND s.state IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM annals_snapshots t
                  WHERE t.stream_id = s.stream_id AND t.state IS NULL AND t.seq > s.seq)
ORDER BY s.version DESC, s.seq DESC
LIMIT 1
