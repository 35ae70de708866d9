-- ? store id, ? partition count, ? creation time (µs).
INSERT INTO annals_store (id, store_id, partition_count, created_at) VALUES (1, ?, ?, ?)
