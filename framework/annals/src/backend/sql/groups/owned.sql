-- What member $2 of group $1 owns.
SELECT partition, owner_generation, paused FROM annals_group_offsets
WHERE group_name = $1 AND owner = $2 ORDER BY partition
