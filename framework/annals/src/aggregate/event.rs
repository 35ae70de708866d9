//! Domain events on the wire: a serde enum in its adjacently tagged form
//! (`#[serde(tag = "type", content = "data")]`), so the variant name is the record's
//! event type and the variant's fields are its payload.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::Upcasters;
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
    let invalid = |reason| Error::InvalidDomainEvent {
        type_name: std::any::type_name::<E>(),
        reason,
    };
    let Value::Object(mut fields) = serde_json::to_value(event).map_err(Error::InvalidJson)? else {
        return Err(invalid(
            "it does not serialise as a JSON object; use #[serde(tag = \"type\", content = \"data\")]",
        ));
    };
    let Some(Value::String(event_type)) = fields.remove("type") else {
        return Err(invalid(
            "it has no string \"type\" field; use #[serde(tag = \"type\", content = \"data\")]",
        ));
    };
    let data = fields.remove("data").unwrap_or(Value::Null);
    if !fields.is_empty() {
        // Internally tagged (`tag` without `content`): the fields sit beside "type"
        // and would be lost.
        return Err(invalid(
            "it has fields beside \"type\" and \"data\"; add content = \"data\" to #[serde(tag = …)]",
        ));
    }
    let payload: Box<RawValue> = serde_json::value::to_raw_value(&data).map_err(Error::InvalidJson)?;
    Ok(NewEvent::raw(event_type, payload))
}

/// The domain event a record holds, upcast from the schema version it was written
/// with to the enum's current one.
pub(crate) fn decode<E: DomainEvent>(record: &RecordedEvent, upcasters: &Upcasters) -> Result<E> {
    let written = record
        .metadata
        .extra
        .get(SCHEMA_VERSION_KEY)
        .and_then(Value::as_u64)
        .map_or(1, |version| version.min(u64::from(u32::MAX)) as u32);
    if written > E::SCHEMA_VERSION {
        return Err(Error::InvalidDomainEvent {
            type_name: std::any::type_name::<E>(),
            reason: "a record was written with a newer schema version than this build knows",
        });
    }
    if written == E::SCHEMA_VERSION || upcasters.is_empty() {
        // The common case: splice the stored payload into the tagged form and parse
        // once, without building a `Value`.
        let event_type = serde_json::to_string(&record.event_type).map_err(Error::InvalidJson)?;
        let tagged = format!(r#"{{"type":{event_type},"data":{}}}"#, record.payload.get());
        return serde_json::from_str(&tagged).map_err(Error::InvalidJson);
    }
    let data: Value = serde_json::from_str(record.payload.get()).map_err(Error::InvalidJson)?;
    let (event_type, data) = upcasters.upcast(&record.event_type, written, E::SCHEMA_VERSION, data);
    let mut tagged = Map::with_capacity(2);
    tagged.insert("type".into(), Value::String(event_type));
    tagged.insert("data".into(), data);
    serde_json::from_value(Value::Object(tagged)).map_err(Error::InvalidJson)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum InternallyTagged {
        Deposited { amount: i64 },
    }
    impl DomainEvent for InternallyTagged {}

    #[derive(Serialize, Deserialize)]
    enum ExternallyTagged {
        Deposited { amount: i64 },
    }
    impl DomainEvent for ExternallyTagged {}

    #[test]
    fn refuses_forms_that_would_lose_data() {
        let internal = encode(&InternallyTagged::Deposited { amount: 5 });
        assert!(
            matches!(internal, Err(Error::InvalidDomainEvent { .. })),
            "{internal:?}"
        );
        let external = encode(&ExternallyTagged::Deposited { amount: 5 });
        assert!(
            matches!(external, Err(Error::InvalidDomainEvent { .. })),
            "{external:?}"
        );
    }
}
