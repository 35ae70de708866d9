SELECT generation, commit_mode, mirrored_from FROM annals_groups WHERE group_name = $1
