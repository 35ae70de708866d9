-- The store's leader, NULL on a leader; a follower stays one until this transaction ends.
SELECT leader_url FROM annals_store{for_share}
