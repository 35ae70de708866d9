-- The newest live snapshot of stream $1 (highest version, then latest written), of
-- schema version $2 first when one exists. Live: after the key's last tombstone.
SELECT s.seq, s.version, s.schema_version, s.state
FROM annals_snapshots s
WHERE s.stream_id = $1 AND s.state IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM annals_snapshots t
                  WHERE t.stream_id = s.stream_id AND t.state IS NULL AND t.seq > s.seq)
ORDER BY (s.schema_version = $2) DESC, s.version DESC, s.seq DESC
LIMIT 1
