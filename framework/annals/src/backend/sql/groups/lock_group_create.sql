-- Creates group $1 on first use.
INSERT INTO annals_groups (group_name, generation, created_at) VALUES ($1, 0, {now})
ON CONFLICT (group_name) DO NOTHING
