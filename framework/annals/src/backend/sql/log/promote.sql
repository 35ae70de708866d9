-- Become a leader at the next epoch.
UPDATE annals_store SET leader_url = NULL, leader_epoch = leader_epoch + 1
RETURNING leader_url, leader_epoch
