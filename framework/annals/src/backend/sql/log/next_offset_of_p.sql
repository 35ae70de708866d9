(SELECT max(e."offset") + 1 FROM annals_events e WHERE e.partition = p.partition)
