-- ?1 partition, ?2 first offset: records just copied from a leader whose stream was
-- already truncated past them (the truncation, in another partition, was copied first)
-- are redacted as they arrive. A deletion record is never redacted by a truncation.
UPDATE annals_events SET payload = 'null', redacted = 1,
    metadata = CASE WHEN json_type(metadata, '$.command_id') = 'text'
                    THEN json_object('command_id', json_extract(metadata, '$.command_id')) ELSE '{}' END
WHERE partition = ?1 AND "offset" >= ?2 AND redacted = 0 AND event_type <> 'annals.StreamDeleted'
  AND version < (SELECT t.before FROM annals_truncated_streams t WHERE t.stream_id = annals_events.stream_id)
