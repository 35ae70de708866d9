-- Group $1's generation, its row locked until the transaction ends.
SELECT generation FROM annals_groups WHERE group_name = $1{for_update}
