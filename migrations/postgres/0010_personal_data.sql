-- Personal data (crypto-shredding): each subject's key, which seals its fields in
-- payloads. Erasing a subject deletes its key and keeps the row (`key` NULL), so that
-- an erased subject can never be written again. `seq` is the place of a row's latest
-- change, taken in commit order (writers hold an advisory lock), by which a follower
-- copies what changed.
CREATE TABLE annals_subject_keys (
    subject   text   COLLATE "C" PRIMARY KEY,
    key       bytea,
    seq       bigint NOT NULL,
    erased_at bigint
);
CREATE INDEX annals_subject_keys_seq ON annals_subject_keys (seq);

-- Which streams hold which subjects' sealed fields: snapshots of those streams are
-- sealed under the same keys.
CREATE TABLE annals_subject_streams (
    stream_id text COLLATE "C" NOT NULL,
    subject   text COLLATE "C" NOT NULL,
    PRIMARY KEY (stream_id, subject)
);
CREATE INDEX annals_subject_streams_subject ON annals_subject_streams (subject);
