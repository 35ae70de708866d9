//! Events going in ([`NewEvent`]) and records coming out ([`RecordedEvent`]), with the
//! [`Metadata`] every record carries.
//!
//! Payloads are kept as the JSON text they arrived as ([`RawValue`]): the store never
//! re-encodes them, and a reader decodes only what it needs.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::position::{Offset, Partition, Version};
use crate::stream::StreamId;

/// The metadata key holding the schema version an event was written with.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// The longest event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 200;

/// Metadata stored with every record: the ids that tie events to the commands that
/// caused them, plus any keys of the user's own.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metadata {
    /// Ties together everything caused by one original request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The id of the message (command or event) that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The idempotency key of the append that wrote this record (set by the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// The W3C trace context of the command that wrote this record, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<crate::trace::TraceParent>,
    /// The user's own keys.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets the W3C trace context.
    pub fn with_traceparent(mut self, traceparent: crate::trace::TraceParent) -> Self {
        self.traceparent = Some(traceparent);
        self
    }

    /// The keys the store owns, which [`Metadata::extra`] may not hold.
    pub const RESERVED_KEYS: [&'static str; 4] = ["correlation_id", "causation_id", "command_id", "traceparent"];

    /// Adds one user key. A reserved key (see [`Metadata::RESERVED_KEYS`]) makes the
    /// append fail with [`Error::ReservedMetadataKey`]; set those through their fields.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

// Read by hand rather than derived with `flatten`, which buffers the user's keys in an
// intermediate tree before building the map: metadata is parsed for every record read,
// and that cost a consumer catching up a large log a noticeable share of its time.
impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_map(MetadataVisitor)
    }
}

struct MetadataVisitor;

impl<'de> serde::de::Visitor<'de> for MetadataVisitor {
    type Value = Metadata;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object of metadata")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> std::result::Result<Metadata, M::Error> {
        let mut metadata = Metadata::default();
        let mut seen: Vec<&'static str> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let (name, id) = match key.as_str() {
                "correlation_id" => ("correlation_id", &mut metadata.correlation_id),
                "causation_id" => ("causation_id", &mut metadata.causation_id),
                "command_id" => ("command_id", &mut metadata.command_id),
                // Read leniently: a record written before annals knew the key may hold
                // anything there, which stays a user key rather than failing the read.
                "traceparent" if metadata.traceparent.is_none() => {
                    let value: Value = map.next_value()?;
                    match value.as_str().and_then(|text| text.parse().ok()) {
                        Some(traceparent) => metadata.traceparent = Some(traceparent),
                        None => {
                            metadata.extra.insert(key, value);
                        }
                    }
                    continue;
                }
                _ => {
                    let value = map.next_value()?;
                    metadata.extra.insert(key, value);
                    continue;
                }
            };
            if seen.contains(&name) {
                return Err(serde::de::Error::duplicate_field(name));
            }
            seen.push(name);
            *id = map.next_value()?;
        }
        Ok(metadata)
    }
}

/// An event to append: a type, a JSON payload, metadata and optionally its own id.
///
/// ```
/// use annals::{Metadata, NewEvent};
///
/// let event = NewEvent::json("OrderPaid", &serde_json::json!({"amount": 1999}))?
///     .with_metadata(Metadata::new().with("channel", "web"));
/// assert_eq!(event.payload().get(), r#"{"amount":1999}"#);
/// # Ok::<(), annals::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub(crate) id: Option<Uuid>,
    pub(crate) event_type: String,
    pub(crate) payload: Box<RawValue>,
    pub(crate) metadata: Metadata,
    /// Fields holding personal data, sealed by the store before they are written.
    pub(crate) personal: Vec<crate::personal::PersonalData>,
}

impl NewEvent {
    /// An event whose payload is `payload` serialised as JSON.
    pub fn json<T: Serialize + ?Sized>(event_type: impl Into<String>, payload: &T) -> Result<Self> {
        let payload = serde_json::value::to_raw_value(payload).map_err(Error::InvalidJson)?;
        Ok(Self::raw(event_type, payload))
    }

    /// An event whose payload is JSON text, checked but kept byte for byte.
    pub fn from_json_text(event_type: impl Into<String>, payload: impl Into<String>) -> Result<Self> {
        let payload = RawValue::from_string(payload.into()).map_err(Error::InvalidJson)?;
        Ok(Self::raw(event_type, payload))
    }

    /// An event with an already parsed payload.
    pub fn raw(event_type: impl Into<String>, payload: Box<RawValue>) -> Self {
        NewEvent {
            id: None,
            event_type: event_type.into(),
            payload,
            metadata: Metadata::default(),
            personal: Vec::new(),
        }
    }

    /// Sets the metadata (the store adds the append's command id to it).
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Gives the event its own id instead of a generated UUID v7. An id the store
    /// already holds is rejected with [`Error::DuplicateEventId`].
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// Marks the payload fields at `fields` (JSON pointers such as `/email`) as
    /// `subject`'s personal data: the store seals them with the subject's key before
    /// writing, and they read as erased once the subject is (see
    /// [`personal`](crate::personal)). An event may hold several subjects' fields.
    pub fn personal<F: Into<String>>(
        mut self,
        subject: crate::personal::Subject,
        fields: impl IntoIterator<Item = F>,
    ) -> Self {
        let fields = fields.into_iter().map(Into::into).collect();
        self.personal.push(crate::personal::PersonalData { subject, fields });
        self
    }

    /// The personal data marked with [`NewEvent::personal`].
    pub fn personal_data(&self) -> &[crate::personal::PersonalData] {
        &self.personal
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The JSON payload.
    pub fn payload(&self) -> &RawValue {
        &self.payload
    }

    /// The metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The id given with [`NewEvent::with_id`], if any.
    pub fn id(&self) -> Option<Uuid> {
        self.id
    }
}

/// One stored event with its position, as every read returns it.
///
/// Its JSON form is the wire format of the HTTP API:
/// `{"partition","offset","stream","version","id","type","data","metadata","recorded_at"}`,
/// plus `"last_in_append": false` on every record of an append but its last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The partition holding the stream.
    pub partition: Partition,
    /// Position in the partition.
    pub offset: Offset,
    /// The stream the event belongs to.
    pub stream: StreamId,
    /// Position in the stream (1-based).
    pub version: Version,
    /// The event's unique id.
    #[serde(rename = "id")]
    pub event_id: Uuid,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The payload, as the JSON text it was appended with.
    #[serde(rename = "data")]
    pub payload: Box<RawValue>,
    /// The metadata.
    pub metadata: Metadata,
    /// When the store wrote the record (UTC, microsecond precision).
    pub recorded_at: DateTime<Utc>,
    /// Whether this is the last record of the append that wrote it. An append's
    /// records are contiguous in one partition, so a reader that stops after such a
    /// record holds whole appends (a follower ships them so). In JSON, the key
    /// `"last_in_append": false` appears only on the other records of multi-event
    /// appends; a record without it is the last of its append.
    #[serde(default = "last_in_append_by_default", skip_serializing_if = "is_true")]
    pub last_in_append: bool,
    /// Whether the record was redacted (its stream was deleted): it keeps its position,
    /// stream, version, id, type and time, but its payload is JSON `null` and its
    /// metadata empty but for its command id. In JSON, `"redacted": true` appears only on redacted records.
    #[serde(default, skip_serializing_if = "is_false")]
    pub redacted: bool,
}

fn last_in_append_by_default() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl RecordedEvent {
    /// Calls `see` with this record seen as an [`EventView`].
    pub fn view<T>(&self, see: impl FnOnce(EventView<'_>) -> Result<T>) -> Result<T> {
        see(EventView {
            version: self.version,
            event_type: &self.event_type,
            payload: self.payload.get(),
            schema_version: self.schema_version(),
        })
    }

    /// The schema version the event was written with: its metadata's `schema_version`
    /// when that is a non-negative integer (capped at `u32::MAX`), else `None`, which
    /// decoding reads as version 1.
    pub fn schema_version(&self) -> Option<u32> {
        schema_version(self.metadata.extra.get(SCHEMA_VERSION_KEY))
    }

    /// Deserialises the payload.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(self.payload.get()).map_err(Error::InvalidJson)
    }
}

/// A stored event seen in place, without copying: the parts loading an aggregate
/// needs, borrowed from the row being read (see [`EventStore::fold_stream`]).
///
/// [`EventStore::fold_stream`]: crate::EventStore::fold_stream
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventView<'a> {
    /// Position in the stream (1-based).
    pub version: Version,
    /// The event type.
    pub event_type: &'a str,
    /// The payload, as the JSON text it was appended with.
    pub payload: &'a str,
    /// The schema version it was written with (see [`RecordedEvent::schema_version`]).
    pub schema_version: Option<u32>,
}

/// A `schema_version` metadata value as a version: a non-negative integer, capped at
/// `u32::MAX`; anything else is `None`.
pub(crate) fn schema_version(value: Option<&Value>) -> Option<u32> {
    value
        .and_then(Value::as_u64)
        .map(|version| version.min(u64::from(u32::MAX)) as u32)
}

/// The schema version in a record's metadata text, parsing only that key.
#[cfg(feature = "sqlite")]
pub(crate) fn schema_version_in(metadata: &str) -> Result<Option<u32>> {
    #[derive(Deserialize)]
    struct Written {
        #[serde(default, rename = "schema_version")]
        schema_version: Option<Value>,
    }
    let written: Written = serde_json::from_str(metadata).map_err(Error::InvalidJson)?;
    Ok(schema_version(written.schema_version.as_ref()))
}

impl PartialEq for RecordedEvent {
    fn eq(&self, other: &Self) -> bool {
        self.partition == other.partition
            && self.offset == other.offset
            && self.stream == other.stream
            && self.version == other.version
            && self.event_id == other.event_id
            && self.event_type == other.event_type
            && self.payload.get() == other.payload.get()
            && self.metadata == other.metadata
            && self.recorded_at == other.recorded_at
            && self.last_in_append == other.last_in_append
            && self.redacted == other.redacted
    }
}

impl Eq for RecordedEvent {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> serde_json::Result<Metadata> {
        serde_json::from_str(text)
    }

    #[test]
    fn metadata_reads_its_ids_and_keeps_every_other_key() {
        let id = Uuid::now_v7();
        let metadata = parse(&format!(
            r#"{{"correlation_id":"{id}","causation_id":null,"schema_version":2,"channel":{{"web":true}}}}"#
        ))
        .expect("metadata");
        assert_eq!(metadata.correlation_id, Some(id));
        assert_eq!((metadata.causation_id, metadata.command_id), (None, None));
        assert_eq!(metadata.extra.len(), 2);
        assert_eq!(metadata.extra["channel"], serde_json::json!({"web": true}));
        assert_eq!(parse("{}").expect("empty"), Metadata::default());
        let written = serde_json::to_string(&metadata).expect("encode");
        assert_eq!(parse(&written).expect("again"), metadata);
    }

    #[test]
    fn metadata_refuses_what_is_not_an_object_of_ids() {
        for bad in [
            "[]",
            "7",
            r#"{"command_id":"not-a-uuid"}"#,
            r#"{"causation_id":12}"#,
            r#"{"command_id":null,"command_id":null}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
