-- Members of group $1 whose session expired.
DELETE FROM annals_group_members WHERE group_name = $1 AND heartbeat_at + session_timeout_ms < {now}
