-- $1 group, $2 member, $3 host, $4 session timeout (ms).
INSERT INTO annals_group_members (group_name, member_id, host, joined_at, heartbeat_at, session_timeout_ms)
VALUES ($1, $2, $3, {now}, {now}, $4)
