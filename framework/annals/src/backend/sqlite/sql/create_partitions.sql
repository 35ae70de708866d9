-- Partitions 0 .. ? - 1.
WITH RECURSIVE n(p) AS (SELECT 0 UNION ALL SELECT p + 1 FROM n WHERE p + 1 < ?)
INSERT INTO annals_partitions (partition) SELECT p FROM n
