-- A batch of appends that do not depend on each other (see annals_append_set in the
-- migrations).
SELECT o_status, o_first_offset, o_last_offset, o_first_version, o_last_version, o_actual, o_other
FROM annals_append_set($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
