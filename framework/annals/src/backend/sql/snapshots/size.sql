-- Rows (snapshots and tombstones) and bytes of state.
SELECT count(*), coalesce(sum(length(state)), 0) FROM annals_snapshots
