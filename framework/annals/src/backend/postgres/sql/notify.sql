-- $1 channel, $2 payload. Losing a notification only delays remote subscribers until
-- their next poll, so its commit need not wait for the disk.
SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)
