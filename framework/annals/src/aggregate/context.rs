//! Who asked, and why: the ids that flow from a command into every record it writes.

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::record::{Metadata, RecordedEvent};
use crate::trace::TraceParent;

/// The context of one command: its idempotency key (command id), the conversation it
/// belongs to (correlation id), what caused it (causation id), and user metadata. All
/// of it lands in the metadata of every event the command writes.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandContext {
    /// Applied at most once: a retry with the same id writes nothing and returns the
    /// original outcome.
    pub command_id: Uuid,
    /// Shared by everything that follows from one original request.
    pub correlation_id: Uuid,
    /// The message that caused this command (an event, for a saga), if any.
    pub causation_id: Option<Uuid>,
    /// Keys of the caller's own (user, tenant, …).
    pub metadata: Map<String, Value>,
    /// The W3C trace context the command runs in, written into its events' metadata.
    pub traceparent: Option<TraceParent>,
}

impl Default for CommandContext {
    fn default() -> Self {
        Self::new()
    }
}

impl CommandContext {
    /// A new command, starting a new conversation (the correlation id is the command id).
    pub fn new() -> Self {
        let id = Uuid::now_v7();
        CommandContext {
            command_id: id,
            correlation_id: id,
            causation_id: None,
            metadata: Map::new(),
            traceparent: None,
        }
    }

    /// A command whose id the caller chose (for example from an HTTP idempotency key).
    pub fn with_command_id(command_id: Uuid) -> Self {
        CommandContext {
            command_id,
            correlation_id: command_id,
            causation_id: None,
            metadata: Map::new(),
            traceparent: None,
        }
    }

    /// The context of a command issued in reaction to `event` (a saga's next step):
    /// same correlation, caused by the event, and a command id derived from the event
    /// id and `step`. A redelivered event therefore issues the same command id, and the
    /// store applies it only once. The event's trace continues, in a span of its own;
    /// its user metadata is not carried over.
    pub fn caused_by(event: &RecordedEvent, step: &str) -> Self {
        CommandContext {
            command_id: Uuid::new_v5(&event.event_id, step.as_bytes()),
            correlation_id: event.metadata.correlation_id.unwrap_or(event.event_id),
            causation_id: Some(event.event_id),
            metadata: Map::new(),
            traceparent: event.metadata.traceparent.map(|parent| parent.child()),
        }
    }

    /// Runs the command in the W3C trace `traceparent` (from an incoming request's
    /// header, say): its events carry it.
    pub fn with_traceparent(mut self, traceparent: TraceParent) -> Self {
        self.traceparent = Some(traceparent);
        self
    }

    /// Adds one user metadata key. `schema_version` is set by the repository from the
    /// event type and overrides a user key of that name.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The metadata of records written in this context: its correlation, causation,
    /// trace and keys (the store adds the command id).
    pub(crate) fn metadata(&self) -> Metadata {
        Metadata {
            correlation_id: Some(self.correlation_id),
            causation_id: self.causation_id,
            command_id: None,
            traceparent: self.traceparent,
            extra: self.metadata.clone(),
        }
    }

    /// The metadata of the events this command writes: [`metadata`](Self::metadata)
    /// and the schema version of their JSON.
    pub(crate) fn event_metadata(&self, schema_version: u32) -> Metadata {
        let mut metadata = self.metadata();
        metadata
            .extra
            .insert(super::event::SCHEMA_VERSION_KEY.into(), schema_version.into());
        metadata
    }
}
