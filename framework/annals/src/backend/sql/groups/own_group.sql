-- A member joined group $1 here, committing in mode $2: the group is this store's own.
UPDATE annals_groups SET commit_mode = $2, mirrored_from = NULL WHERE group_name = $1
