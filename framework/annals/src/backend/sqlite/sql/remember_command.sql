-- The outcome of an append made with a command id, unless the command id is taken
-- (then no row changes, and the writer reads the stored outcome).
INSERT INTO annals_command_ids
    (command_id, stream_id, partition, first_offset, last_offset, first_version, last_version)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (command_id) DO NOTHING
