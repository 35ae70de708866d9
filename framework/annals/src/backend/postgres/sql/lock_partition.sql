-- The partition's lock ($1 the store's lock space, $2 the partition), as appends take it.
SELECT pg_advisory_xact_lock($1, $2)
