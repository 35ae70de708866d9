-- Records shipped from a leader, in one call (see annals_replicate in the migrations).
SELECT o_status, coalesce(o_next, 0)
FROM annals_replicate($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
