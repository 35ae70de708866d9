INSERT INTO annals_command_ids
    (command_id, stream_id, partition, first_offset, last_offset, first_version, last_version)
VALUES (?, ?, ?, ?, ?, ?, ?)
