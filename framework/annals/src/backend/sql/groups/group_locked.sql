-- Group $1's row, locked until the transaction ends.
SELECT generation, commit_mode, mirrored_from FROM annals_groups WHERE group_name = $1{for_update}
