-- The committed offset of partition $2 of group $1, if member $3 owns it since generation $4.
SELECT committed FROM annals_group_offsets
WHERE group_name = $1 AND partition = $2 AND owner = $3 AND owner_generation = $4
