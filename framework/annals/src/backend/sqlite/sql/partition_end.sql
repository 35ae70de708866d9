-- ? partition: its last record's offset and time.
SELECT "offset", recorded_at FROM annals_events WHERE partition = ? ORDER BY "offset" DESC LIMIT 1
