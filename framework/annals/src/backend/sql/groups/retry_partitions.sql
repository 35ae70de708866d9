-- Partitions of group $1 with dead letters waiting to be retried.
SELECT DISTINCT partition FROM annals_dead_letters WHERE group_name = $1 AND status = 'retry' ORDER BY partition
