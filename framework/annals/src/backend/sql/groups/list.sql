-- Every group with its live members.
SELECT g.group_name, g.generation,
       (SELECT count(*) FROM annals_group_members m
        WHERE m.group_name = g.group_name AND m.heartbeat_at + m.session_timeout_ms >= {now}),
       g.commit_mode, g.mirrored_from
FROM annals_groups g ORDER BY g.group_name
