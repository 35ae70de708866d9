-- Partitions 0 .. $1 - 1.
INSERT INTO annals_partitions (partition) SELECT generate_series(0, $1 - 1)
