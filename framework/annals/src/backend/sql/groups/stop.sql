-- The failure policy stops partition $2 of group $1 with reason $3.
UPDATE annals_group_offsets SET paused = 1, stopped_reason = $3 WHERE group_name = $1 AND partition = $2
