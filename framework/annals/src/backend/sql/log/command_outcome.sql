-- $1 command id: stream id, partition, first and last offset, first and last version.
SELECT stream_id, partition, first_offset, last_offset, first_version, last_version
FROM annals_command_ids WHERE command_id = $1
