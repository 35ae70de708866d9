-- $1 store id, $2 partition count; nothing if another open created it first.
INSERT INTO annals_store (id, store_id, partition_count) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING
