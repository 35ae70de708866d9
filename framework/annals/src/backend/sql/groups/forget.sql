-- Everything of group $1, in an order foreign keys allow.
DELETE FROM annals_dead_letters WHERE group_name = $1;
DELETE FROM annals_group_offsets WHERE group_name = $1;
DELETE FROM annals_group_members WHERE group_name = $1;
DELETE FROM annals_groups WHERE group_name = $1
