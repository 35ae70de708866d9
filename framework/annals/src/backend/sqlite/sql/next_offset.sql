-- ? partition: its next offset, NULL when it is empty.
SELECT max("offset") + 1 FROM annals_events WHERE partition = ?
