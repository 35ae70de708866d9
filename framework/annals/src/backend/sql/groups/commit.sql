-- Moves the committed offset of partition $2 of group $1 from $6 to $5, only if member
-- $3 owns it since generation $4 and nobody moved it since (the fence).
UPDATE annals_group_offsets SET committed = $5, updated_at = {now}
WHERE group_name = $1 AND partition = $2 AND owner = $3 AND owner_generation = $4 AND committed = $6
