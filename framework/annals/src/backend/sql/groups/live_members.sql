SELECT member_id, host, joined_at, heartbeat_at FROM annals_group_members
WHERE group_name = $1 AND heartbeat_at + session_timeout_ms >= {now} ORDER BY member_id
