-- ? command id: the outcome of the append made with it.
SELECT stream_id, partition, first_offset, last_offset, first_version, last_version
FROM annals_command_ids WHERE command_id = ?
