-- Anything before a tombstone of its key (older tombstones included)...
DELETE FROM annals_snapshots WHERE EXISTS (
    SELECT 1 FROM annals_snapshots t
    WHERE t.stream_id = annals_snapshots.stream_id AND t.state IS NULL AND t.seq > annals_snapshots.seq);
-- ...then, of what is left (all after the key's last tombstone), every snapshot a newer
-- one of its key supersedes...
DELETE FROM annals_snapshots WHERE state IS NOT NULL AND EXISTS (
    SELECT 1 FROM annals_snapshots n
    WHERE n.stream_id = annals_snapshots.stream_id AND n.state IS NOT NULL
      AND (n.version > annals_snapshots.version
           OR (n.version = annals_snapshots.version AND n.seq > annals_snapshots.seq)));
-- ...and tombstones written before $1 (µs), past their retention.
DELETE FROM annals_snapshots WHERE state IS NULL AND taken_at < $1
