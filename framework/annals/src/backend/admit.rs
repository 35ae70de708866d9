//! Admission of a batch of appends, shared by the engines that decide in Rust (memory,
//! SQLite's single writer). Each append is checked on its own against what the log
//! holds plus what earlier appends of the same batch wrote, so one failing append never
//! fails its neighbours. PostgreSQL makes the same decisions in SQL, inside its
//! per-partition locks (`migrations/postgres`).

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::PreparedAppend;
use crate::error::{Error, Result};
use crate::log::AppendOutcome;
use crate::position::{Offset, Partition, Version};
use crate::stream::StreamId;

/// What an engine knows about the log before the batch, for the keys the batch touches.
pub(crate) trait LogView {
    fn stream_version(&self, stream: &StreamId) -> Version;
    fn next_offset(&self, partition: Partition) -> Offset;
    fn command(&self, command_id: &Uuid) -> Option<CommandRecord>;
    fn holds_event(&self, event_id: &Uuid) -> bool;
    /// Whether `stream` was hard-deleted (it takes no more records).
    fn hard_deleted(&self, stream: &StreamId) -> bool;
}

/// The stored result of an append made with a command id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandRecord {
    pub(crate) stream: StreamId,
    pub(crate) outcome: AppendOutcome,
}

impl<V: LogView + ?Sized> LogView for &V {
    fn stream_version(&self, stream: &StreamId) -> Version {
        (**self).stream_version(stream)
    }
    fn next_offset(&self, partition: Partition) -> Offset {
        (**self).next_offset(partition)
    }
    fn command(&self, command_id: &Uuid) -> Option<CommandRecord> {
        (**self).command(command_id)
    }
    fn holds_event(&self, event_id: &Uuid) -> bool {
        (**self).holds_event(event_id)
    }
    fn hard_deleted(&self, stream: &StreamId) -> bool {
        (**self).hard_deleted(stream)
    }
}

/// The log as seen by one batch: the engine's view plus the batch's own writes.
pub(crate) struct Admission<V> {
    view: V,
    versions: HashMap<StreamId, Version>,
    next_offsets: HashMap<Partition, Offset>,
    commands: HashMap<Uuid, CommandRecord>,
    event_ids: HashSet<Uuid>,
    /// Streams hard-deleted by earlier appends of the batch.
    hard_deleted: HashSet<StreamId>,
}

/// The decision for one append.
pub(crate) enum Admitted {
    /// Write the events at this outcome's position.
    Write(AppendOutcome),
    /// The command id was applied before: return this, write nothing.
    Duplicate(AppendOutcome),
}

impl<V: LogView> Admission<V> {
    pub(crate) fn new(view: V) -> Self {
        Admission {
            view,
            versions: HashMap::new(),
            next_offsets: HashMap::new(),
            commands: HashMap::new(),
            event_ids: HashSet::new(),
            hard_deleted: HashSet::new(),
        }
    }

    /// The engine's view, for an engine that reads what each append needs just before
    /// deciding it (SQLite's writer, which writes a batch's appends as they arrive).
    #[cfg(feature = "sqlite")]
    pub(crate) fn view_mut(&mut self) -> &mut V {
        &mut self.view
    }

    /// Decides `append` and, when it is written, counts its writes in for the
    /// appends that follow it in the batch.
    pub(crate) fn admit(&mut self, append: &PreparedAppend) -> Result<Admitted> {
        let decision = self.decide(append)?;
        if let Admitted::Write(outcome) = &decision {
            self.record(append, *outcome);
        }
        Ok(decision)
    }

    /// Decides `append` without counting it in: [`record`](Self::record) does, once
    /// it is written.
    pub(crate) fn decide(&self, append: &PreparedAppend) -> Result<Admitted> {
        if let Some(command_id) = append.command_id {
            let known = self
                .commands
                .get(&command_id)
                .cloned()
                .or_else(|| self.view.command(&command_id));
            if let Some(record) = known {
                if record.stream != append.stream {
                    return Err(Error::CommandIdConflict {
                        command_id,
                        stream: append.stream.clone(),
                        existing_stream: record.stream,
                    });
                }
                return Ok(Admitted::Duplicate(AppendOutcome {
                    duplicate: true,
                    ..record.outcome
                }));
            }
        }
        let actual = match self.versions.get(&append.stream) {
            Some(version) => *version,
            None => self.view.stream_version(&append.stream),
        };
        if self.hard_deleted.contains(&append.stream) || self.view.hard_deleted(&append.stream) {
            return Err(Error::StreamDeleted {
                stream: append.stream.clone(),
            });
        }
        if !append.expected.admits(actual) {
            return Err(Error::WrongExpectedVersion {
                stream: append.stream.clone(),
                expected: append.expected,
                actual,
            });
        }
        for event in append.events.iter().filter(|event| event.client_id) {
            if self.event_ids.contains(&event.event_id) || self.view.holds_event(&event.event_id) {
                return Err(Error::DuplicateEventId {
                    event_id: event.event_id,
                });
            }
        }

        let count = append.events.len() as u64;
        let first_offset = match self.next_offsets.get(&append.partition) {
            Some(offset) => *offset,
            None => self.view.next_offset(append.partition),
        };
        let outcome = AppendOutcome {
            partition: append.partition,
            first_offset,
            last_offset: first_offset + count - 1,
            first_version: actual + 1,
            last_version: actual + count,
            duplicate: false,
        };
        Ok(Admitted::Write(outcome))
    }

    /// Counts in the writes of `append`, written at `outcome`, for the appends that
    /// follow it in the batch.
    pub(crate) fn record(&mut self, append: &PreparedAppend, outcome: AppendOutcome) {
        self.versions.insert(append.stream.clone(), outcome.last_version);
        self.next_offsets.insert(append.partition, outcome.last_offset + 1);
        self.event_ids.extend(append.events.iter().map(|event| event.event_id));
        if append
            .events
            .iter()
            .any(|event| crate::store::lifecycle::is_hard_deletion(&event.event_type, event.payload.get()))
        {
            self.hard_deleted.insert(append.stream.clone());
        }
        if let Some(command_id) = append.command_id {
            self.commands.insert(
                command_id,
                CommandRecord {
                    stream: append.stream.clone(),
                    outcome,
                },
            );
        }
    }
}
