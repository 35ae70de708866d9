-- The store's role: the leader's URL (NULL on a leader) and the leader epoch.
SELECT leader_url, leader_epoch FROM annals_store
