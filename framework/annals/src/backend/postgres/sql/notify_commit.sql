-- $1 channel, $2 payload: a group's commit, told to readers waiting in other processes.
-- Inside the commit's own transaction, so it is delivered only if the commit is.
SELECT pg_notify($1, $2)
