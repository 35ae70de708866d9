-- The schema version each event was written with (metadata key `schema_version`), kept
-- beside the metadata so that loading an aggregate reads one number per event instead
-- of sending and parsing every event's metadata. PostgreSQL computes it on insert, so
-- appends and replication write nothing more.
--
-- It is the key's value when that is a JSON integer of at least 0 (at most
-- 4294967295; larger ones read as that), and NULL otherwise: absent, a string, a
-- fraction or negative. NULL reads as schema version 1.
ALTER TABLE annals_events ADD COLUMN schema_version bigint GENERATED ALWAYS AS (
    CASE
        WHEN json_typeof(metadata -> 'schema_version') = 'number'
             AND (metadata ->> 'schema_version') ~ '^[0-9]+$'
        THEN LEAST((metadata ->> 'schema_version')::numeric, 4294967295)::bigint
    END
) STORED;
