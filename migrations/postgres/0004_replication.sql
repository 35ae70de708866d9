-- Replication: a store following a leader records the leader's URL here (NULL on a
-- leader). A follower's position in each partition is its own next offset: records
-- are applied verbatim, offsets included, so the position commits with them.
ALTER TABLE annals_store ADD COLUMN leader_url TEXT;
