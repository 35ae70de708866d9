//! Domain events on the wire: a serde enum in its adjacently tagged form
//! (`#[serde(tag = "type", content = "data")]`), so the variant name is the record's
//! event type and the variant's fields are its payload.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::record::{NewEvent, RecordedEvent};

/// The metadata key holding the schema version an event was written with.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// An aggregate's events: one enum, serialised by serde with
/// `#[serde(tag = "type", content = "data")]`. The variant name is the stable event
/// type stored with each record; the fields are its JSON payload.
pub trait DomainEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The version of the JSON shape these events are written with. Bump it when a
    /// variant's fields change incompatibly; records keep the version they were written
    /// with (metadata key `schema_version`).
    const SCHEMA_VERSION: u32 = 1;
}

/// The record type and payload of `event`.
pub(crate) fn encode<E: DomainEvent>(event: &E) -> Result<NewEvent> {
    let not_tagged = || {
        Error::InvalidEventType {
        event_type: format!(
            "{}: a DomainEvent must serialise as {{\"type\": …, \"data\": …}} (#[serde(tag = \"type\", content = \"data\")])",
            std::any::type_name::<E>()
        ),
    }
    };
    let Value::Object(mut fields) = serde_json::to_value(event).map_err(Error::InvalidJson)? else {
        return Err(not_tagged());
    };
    let Some(Value::String(event_type)) = fields.remove("type") else {
        return Err(not_tagged());
    };
    let data = fields.remove("data").unwrap_or(Value::Null);
    let payload: Box<RawValue> = serde_json::value::to_raw_value(&data).map_err(Error::InvalidJson)?;
    Ok(NewEvent::raw(event_type, payload))
}

/// The domain event a record holds.
pub(crate) fn decode<E: DomainEvent>(record: &RecordedEvent) -> Result<E> {
    let data: Value = serde_json::from_str(record.payload.get()).map_err(Error::InvalidJson)?;
    let mut tagged = Map::with_capacity(2);
    tagged.insert("type".into(), Value::String(record.event_type.clone()));
    tagged.insert("data".into(), data);
    serde_json::from_value(Value::Object(tagged)).map_err(Error::InvalidJson)
}
