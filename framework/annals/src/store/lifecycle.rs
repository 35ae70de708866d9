//! Stream deletion. Deleting a stream appends an `annals.StreamDeleted` record to it;
//! writing that record redacts the stream's earlier records and drops its snapshots,
//! in the same transaction, in every engine and on every follower that copies it.
//!
//! A redacted record keeps its partition, offset, stream, version, id, type and time, so
//! offsets stay gapless (I1) and versions contiguous (I2); its payload becomes JSON
//! `null` and its metadata keeps only the command id (a follower rebuilds command
//! outcomes from it, so I5 survives a failover). A soft-deleted stream reads as absent until it is
//! written again, and its versions go on from the deletion record's. A hard-deleted
//! stream can never be written or read again.

use serde_json::value::RawValue;

use super::{AppendRequest, Store};
use crate::error::{Error, Result};
use crate::log::AppendOutcome;
use crate::position::{ExpectedVersion, Version};
use crate::record::{Metadata, NewEvent, RecordedEvent};
use crate::stream::StreamId;

/// The type of the record that deletes its stream.
pub const STREAM_DELETED: &str = "annals.StreamDeleted";

/// Event types starting with this are the store's own; appends cannot use them.
pub(crate) const RESERVED_TYPE_PREFIX: &str = "annals.";

/// How a stream is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Deletion {
    /// The stream reads as absent; a later append writes it again, its versions going
    /// on after the deletion record's (EventStoreDB's soft delete).
    #[default]
    Soft,
    /// The stream id can never be written again: appends and reads answer
    /// [`Error::StreamDeleted`].
    Hard,
}

/// Whether a record of `event_type` with `payload` is a hard deletion.
pub(crate) fn is_hard_deletion(event_type: &str, payload: &str) -> bool {
    event_type == STREAM_DELETED
        && serde_json::from_str::<serde_json::Value>(payload).is_ok_and(|value| value["hard"] == true)
}

/// For a fold over `stream`: whether `event` is a (soft) deletion record, after which
/// the state starts again from its default. A hard deletion answers
/// [`Error::StreamDeleted`]. Folds never see redacted records.
pub(crate) fn starts_over(stream: &StreamId, event: &crate::record::EventView<'_>) -> Result<bool> {
    if event.event_type != STREAM_DELETED {
        return Ok(false);
    }
    if is_hard_deletion(event.event_type, event.payload) {
        return Err(Error::StreamDeleted { stream: stream.clone() });
    }
    Ok(true)
}

/// Redacts `record` in place, as the SQL engines' triggers do: its payload becomes JSON
/// `null` and its metadata keeps only the command id.
pub(crate) fn redact(record: &mut RecordedEvent) {
    if record.redacted {
        return;
    }
    record.payload = RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"));
    record.metadata = Metadata {
        command_id: record.metadata.command_id,
        ..Metadata::default()
    };
    record.redacted = true;
}

/// Whether a stream at `version` whose latest deletion record is at `deleted` has
/// records to read.
fn readable(version: Version, deleted: Option<Version>) -> bool {
    deleted.map_or(version.0 > 0, |deleted| deleted < version)
}

impl Store {
    /// Deletes `stream`: appends its deletion record, which redacts every earlier
    /// record of the stream and drops its snapshots (see [`Deletion`]). Answers the
    /// deletion record's position.
    ///
    /// A stream that reads as absent (never written, or soft-deleted and not written
    /// since) cannot be soft-deleted ([`Error::StreamNotFound`]); it can be hard-deleted,
    /// which keeps its id from ever being used. A hard-deleted stream answers
    /// [`Error::StreamDeleted`].
    pub async fn delete_stream(&self, stream: &StreamId, deletion: Deletion) -> Result<AppendOutcome> {
        if super::retention::BOOKKEEPING.contains(&stream.category()) {
            return Err(Error::InvalidStreamId {
                id: stream.to_string(),
                reason: "the store's retention rules and scavenge runs cannot be deleted",
            });
        }
        let version = self.stream_version(stream).await?;
        let deleted = self.soft_deletion(stream).await?;
        if deletion == Deletion::Soft && !readable(version, deleted) {
            return Err(Error::StreamNotFound { stream: stream.clone() });
        }
        let record = NewEvent::json(
            STREAM_DELETED,
            &serde_json::json!({ "hard": deletion == Deletion::Hard }),
        )?;
        // Whatever was appended since the version was read is deleted with the rest.
        let request = AppendRequest::new(stream.clone(), ExpectedVersion::Any).event(record);
        let outcome = self.append_own(request).await?;
        self.inner.backend.reclaim().await?;
        crate::telemetry::stream_deleted(deletion == Deletion::Hard);
        // The records before the deletion record, back to the previous one (itself
        // included), are the ones this deletion redacted, as this process saw them.
        let since = deleted.map_or(1, |version| version.0);
        crate::telemetry::records_redacted(outcome.first_version.0.saturating_sub(since));
        Ok(outcome)
    }

    /// Whether `stream` has records to read: it was written and, if it was deleted,
    /// written again since. A hard-deleted stream answers [`Error::StreamDeleted`].
    pub async fn stream_exists(&self, stream: &StreamId) -> Result<bool> {
        let version = self.stream_version(stream).await?;
        Ok(readable(version, self.soft_deletion(stream).await?))
    }

    /// Where reading `stream` from `from_version` starts once deletions are counted:
    /// after its latest deletion record. A hard-deleted stream answers
    /// [`Error::StreamDeleted`].
    pub(super) async fn readable_from(&self, stream: &StreamId, from_version: Version) -> Result<Version> {
        let deleted = self.soft_deletion(stream).await?;
        Ok(deleted.map_or(from_version, |deleted| from_version.max(deleted + 1)))
    }

    /// The version of `stream`'s latest deletion record, when it has one; a hard-deleted
    /// stream answers [`Error::StreamDeleted`].
    async fn soft_deletion(&self, stream: &StreamId) -> Result<Option<Version>> {
        match self.inner.backend.deletion(stream).await? {
            Some((_, true)) => Err(Error::StreamDeleted { stream: stream.clone() }),
            Some((version, false)) => Ok(Some(version)),
            None => Ok(None),
        }
    }
}
