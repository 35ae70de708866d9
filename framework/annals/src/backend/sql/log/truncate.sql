-- $1 partition, $2 offset: what a follower's truncation removes or moves back, in one
-- transaction, in this order. Snapshots that folded a removed record go first, while
-- the records still say which they are.
DELETE FROM annals_snapshots WHERE EXISTS (
    SELECT 1 FROM annals_events e
    WHERE e.partition = $1 AND e."offset" >= $2
      AND e.stream_id = annals_snapshots.stream_id AND e.version <= annals_snapshots.version);
DELETE FROM annals_command_ids WHERE partition = $1 AND first_offset >= $2;
DELETE FROM annals_dead_letters WHERE partition = $1 AND "offset" >= $2;
-- A transactional group (a projection, or a group whose commit mode is unknown) that
-- had handled removed records has their effects in its read model: its partition
-- stops, for an operator to rebuild the group, rather than apply the records shipped in
-- their place on top. Other groups handle those records at least once.
UPDATE annals_group_offsets SET paused = 1,
    stopped_reason = 'records this group had handled were removed by a truncation: rebuild the group'
WHERE partition = $1 AND committed > $2 AND EXISTS (SELECT 1 FROM annals_groups g
    WHERE g.group_name = annals_group_offsets.group_name
      AND coalesce(g.commit_mode, 'transactional') = 'transactional');
UPDATE annals_group_offsets SET committed = $2 WHERE partition = $1 AND committed > $2;
DELETE FROM annals_events WHERE partition = $1 AND "offset" >= $2
