-- $1 group, $2 partition, $3 committed, $4 paused, $5 stopped reason.
INSERT INTO annals_group_offsets
    (group_name, partition, committed, owner, owner_generation, paused, stopped_reason, updated_at)
VALUES ($1, $2, $3, NULL, 0, $4, $5, {now})
ON CONFLICT (group_name, partition) DO UPDATE SET committed = excluded.committed,
    owner = NULL, paused = excluded.paused, stopped_reason = excluded.stopped_reason,
    updated_at = excluded.updated_at
