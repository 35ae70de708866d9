DELETE FROM annals_group_members WHERE group_name = $1 AND member_id = $2
