//! The headers a sink writes on every message, and reading them back.

use annals::RecordedEvent;
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};

/// The record's event id (a UUID).
pub const EVENT_ID: &str = "annals-event-id";
/// The record's event type; the source uses it as the type of what it appends.
pub const EVENT_TYPE: &str = "annals-type";
/// The record's version in its stream (decimal).
pub const VERSION: &str = "annals-version";
/// The record's offset in its annals partition (decimal): where a sink resumes.
pub const OFFSET: &str = "annals-offset";
/// The record's metadata (JSON), when it has any.
pub const METADATA: &str = "annals-metadata";

/// The headers of `record`'s message.
pub(crate) fn of(record: &RecordedEvent) -> OwnedHeaders {
    let (id, version, offset) = (
        record.event_id.to_string(),
        record.version.0.to_string(),
        record.offset.0.to_string(),
    );
    let headers = OwnedHeaders::new_with_capacity(5)
        .insert(Header {
            key: EVENT_ID,
            value: Some(&id),
        })
        .insert(Header {
            key: EVENT_TYPE,
            value: Some(&record.event_type),
        })
        .insert(Header {
            key: VERSION,
            value: Some(&version),
        })
        .insert(Header {
            key: OFFSET,
            value: Some(&offset),
        });
    match serde_json::to_string(&record.metadata) {
        Ok(metadata) if metadata != "{}" => headers.insert(Header {
            key: METADATA,
            value: Some(&metadata),
        }),
        _ => headers,
    }
}

/// The value of header `name` as text, if the message has it and it is UTF-8.
pub(crate) fn text<'a>(headers: Option<&'a BorrowedHeaders>, name: &str) -> Option<&'a str> {
    headers?
        .iter()
        .filter(|header| header.key == name)
        .last()
        .and_then(|header| header.value)
        .and_then(|value| std::str::from_utf8(value).ok())
}
