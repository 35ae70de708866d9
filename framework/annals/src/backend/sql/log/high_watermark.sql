-- $1 partition: its next offset, NULL when it is empty (one index seek).
SELECT max("offset") + 1 FROM annals_events WHERE partition = $1
