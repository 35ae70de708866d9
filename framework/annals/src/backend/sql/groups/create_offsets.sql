-- Group $1's offsets in every partition, where a new group starts (the engine fills
-- the hole in the SELECT); kept where they exist.
INSERT INTO annals_group_offsets (group_name, partition, committed, owner, owner_generation, paused, updated_at)
SELECT $1, p.partition, {start}, NULL, 0, 0, {now} FROM annals_partitions p WHERE true
ON CONFLICT (group_name, partition) DO NOTHING
