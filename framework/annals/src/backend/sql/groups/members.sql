SELECT member_id FROM annals_group_members WHERE group_name = $1 ORDER BY member_id
