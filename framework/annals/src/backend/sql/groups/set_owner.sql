-- $1 group, $2 partition, $3 owner, $4 generation.
UPDATE annals_group_offsets SET owner = $3, owner_generation = $4 WHERE group_name = $1 AND partition = $2
