-- $1 leader URL, $2 the leader's epoch: follow it, the epoch rising to its.
UPDATE annals_store SET leader_url = $1,
    leader_epoch = CASE WHEN leader_epoch > $2 THEN leader_epoch ELSE $2 END
RETURNING leader_url, leader_epoch
