-- A live member's heartbeat: $1 group, $2 member, $3 session timeout (ms).
UPDATE annals_group_members SET heartbeat_at = {now}, session_timeout_ms = $3
WHERE group_name = $1 AND member_id = $2
