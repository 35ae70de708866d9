//! Domain events on the wire: a serde enum in its adjacently tagged form
//! (`#[serde(tag = "type", content = "data")]`), so the variant name is the record's
//! event type and the variant's fields are its payload.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::Upcasters;
use crate::error::{Error, Result};
use crate::record::{EventView, NewEvent, RecordedEvent};

pub use crate::record::SCHEMA_VERSION_KEY;

/// An aggregate's events: one enum, serialised by serde with
/// `#[serde(tag = "type", content = "data")]`. The variant name is the stable event
/// type stored with each record; the fields are its JSON payload.
///
/// Derive it: `#[derive(DomainEvent)]` checks the enum's serde form at compile time
/// and lists its event types.
///
/// ```
/// use annals::aggregate::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, DomainEvent)]
/// #[serde(tag = "type", content = "data")]
/// #[domain_event(schema_version = 2)]
/// enum OrderEvent {
///     Placed { lines: u32 },
///     // Old records say "Canceled"; new ones are written "Cancelled".
///     #[serde(rename = "Cancelled", alias = "Canceled")]
///     CancelledByCustomer { reason: String },
/// }
///
/// assert_eq!(OrderEvent::EVENT_TYPES, ["Placed", "Cancelled", "Canceled"]);
/// assert_eq!(OrderEvent::SCHEMA_VERSION, 2);
/// ```
///
/// An enum serde would write in another form does not compile:
///
/// ```compile_fail
/// use annals::aggregate::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, DomainEvent)]
/// #[serde(tag = "type")] // internally tagged: the payload would sit beside "type"
/// enum OrderEvent {
///     Placed { lines: u32 },
/// }
/// ```
///
/// Nor does a struct, or two variants written as the same event type:
///
/// ```compile_fail
/// use annals::aggregate::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, DomainEvent)]
/// #[serde(tag = "type", content = "data", rename_all = "lowercase")]
/// enum OrderEvent {
///     Placed { lines: u32 },
///     #[serde(rename = "placed")]
///     PlacedAgain { lines: u32 },
/// }
/// ```
pub trait DomainEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The version of the JSON shape these events are written with. Bump it when a
    /// variant's fields change incompatibly; records keep the version they were written
    /// with (metadata key `schema_version`).
    const SCHEMA_VERSION: u32 = 1;

    /// The event types the enum reads, in variant order (empty when the impl does not
    /// say; the derive fills it, aliases included).
    const EVENT_TYPES: &'static [&'static str] = &[];
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

/// The domain event `record` holds, upcast to the enum's current schema version: what
/// a repository applies when it loads, for projections and sagas that read records.
pub fn decode_event<E: DomainEvent>(record: &RecordedEvent, upcasters: &Upcasters) -> Result<E> {
    Decoder::new(upcasters).decode_record(record)
}

/// Turns stored events into domain events, upcasting old schema versions. One
/// decoder serves a whole load and reuses its buffer from event to event.
pub(crate) struct Decoder<'u> {
    upcasters: &'u Upcasters,
    tagged: Vec<u8>,
}

impl<'u> Decoder<'u> {
    pub(crate) fn new(upcasters: &'u Upcasters) -> Self {
        Decoder {
            upcasters,
            tagged: Vec::with_capacity(512),
        }
    }

    /// The domain event `event` holds, upcast from the schema version it was written
    /// with (metadata key `schema_version`, 1 when absent) to the enum's current one.
    pub(crate) fn decode<E: DomainEvent>(&mut self, event: EventView<'_>) -> Result<E> {
        self.decode_parts(event.event_type, event.payload, event.schema_version)
    }

    /// The same for a record.
    pub(crate) fn decode_record<E: DomainEvent>(&mut self, record: &RecordedEvent) -> Result<E> {
        self.decode_parts(&record.event_type, record.payload.get(), record.schema_version())
    }

    fn decode_parts<E: DomainEvent>(
        &mut self,
        event_type: &str,
        payload: &str,
        schema_version: Option<u32>,
    ) -> Result<E> {
        let written = schema_version.unwrap_or(1);
        if written > E::SCHEMA_VERSION {
            return Err(Error::InvalidDomainEvent {
                type_name: std::any::type_name::<E>(),
                reason: "a record was written with a newer schema version than this build knows",
            });
        }
        if written == E::SCHEMA_VERSION || self.upcasters.is_empty() {
            // The common case: splice the stored payload into the tagged form and
            // parse once, without building a `Value`.
            self.tagged.clear();
            self.tagged.extend_from_slice(br#"{"type":"#);
            serde_json::to_writer(&mut self.tagged, event_type).map_err(Error::InvalidJson)?;
            self.tagged.extend_from_slice(br#","data":"#);
            self.tagged.extend_from_slice(payload.as_bytes());
            self.tagged.push(b'}');
            return serde_json::from_slice(&self.tagged).map_err(Error::InvalidJson);
        }
        let data: Value = serde_json::from_str(payload).map_err(Error::InvalidJson)?;
        let (event_type, data) = self.upcasters.upcast(event_type, written, E::SCHEMA_VERSION, data);
        let mut tagged = Map::with_capacity(2);
        tagged.insert("type".into(), Value::String(event_type));
        tagged.insert("data".into(), data);
        serde_json::from_value(Value::Object(tagged)).map_err(Error::InvalidJson)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

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
