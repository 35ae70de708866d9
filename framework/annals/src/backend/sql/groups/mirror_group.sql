-- Group $1 copied from leader $4: generation $2, commit mode $3. A group of this
-- store's own (mirrored_from NULL) is left alone.
INSERT INTO annals_groups (group_name, generation, created_at, commit_mode, mirrored_from)
VALUES ($1, $2, {now}, $3, $4)
ON CONFLICT (group_name) DO UPDATE SET generation = excluded.generation,
    commit_mode = excluded.commit_mode, mirrored_from = excluded.mirrored_from
WHERE annals_groups.mirrored_from IS NOT NULL
