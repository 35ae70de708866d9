//! What a command works on: a store opened from `--db`, or an `annals serve` reached
//! over HTTP with `--server` (and `--token`). Commands call the same operations either
//! way and print the same output.

use annals::group::admin::{self, DeadLetter, GroupDescription, GroupSummary, ResetTo};
use annals::personal::{Erasure, PersonalData, Subject};
use annals::{
    AppendOutcome, AppendRequest, Deletion, Metadata, NewEvent, Offset, Partition, RecordedEvent, Store, StreamId,
    StreamInfo, Version,
};
use annals_client::wire::{AppendBody, EventBody, StreamDeleted};
use annals_client::{Client, ClientError};
use serde_json::value::RawValue;

use crate::output::{CliError, CliResult};

/// A store, or a server.
pub(crate) enum Target {
    Store(Store),
    Server(Client),
}

/// Partitions as `annals stats` shows them.
pub(crate) struct Partitions {
    pub(crate) backend: String,
    pub(crate) role: String,
    pub(crate) leader_epoch: u64,
    pub(crate) next_offsets: Vec<Offset>,
    pub(crate) replication_lag: Option<Vec<u64>>,
}

/// One event to append, as the command line gives it.
pub(crate) struct Append {
    pub(crate) stream: StreamId,
    pub(crate) expected: annals::ExpectedVersion,
    pub(crate) command_id: Option<uuid::Uuid>,
    pub(crate) event_type: String,
    pub(crate) data: String,
    pub(crate) metadata: Option<Metadata>,
    pub(crate) id: Option<uuid::Uuid>,
    pub(crate) personal: Vec<PersonalData>,
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        match error {
            // The server's own answer, as it answered it.
            ClientError::Api { body, .. } => {
                CliError::Remote(serde_json::to_value(body).unwrap_or_else(|_| serde_json::json!({})))
            }
            other => CliError::Usage(other.to_string()),
        }
    }
}

impl Target {
    pub(crate) async fn open(
        db: &str,
        server: Option<&str>,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
    ) -> CliResult<Target> {
        Ok(match server {
            Some(server) => Target::Server(Client::trusting(server, token, ca_file)?),
            None => Target::Store(crate::commands::open_existing(db).await?),
        })
    }

    pub(crate) async fn close(self) {
        if let Target::Store(store) = self {
            store.close().await;
        }
    }

    pub(crate) async fn append(&self, append: Append) -> CliResult<AppendOutcome> {
        match self {
            Target::Store(store) => {
                let mut event = NewEvent::from_json_text(append.event_type, append.data)?;
                if let Some(metadata) = append.metadata {
                    event = event.with_metadata(metadata);
                }
                if let Some(id) = append.id {
                    event = event.with_id(id);
                }
                for data in append.personal {
                    event = event.personal(data.subject, data.fields);
                }
                let mut request = AppendRequest::new(append.stream, append.expected).event(event);
                request.command_id = append.command_id;
                Ok(store.append(request).await?)
            }
            Target::Server(remote) => {
                // The payload is sent as the text given, as `--db` stores it.
                let data = RawValue::from_string(append.data)
                    .map_err(|error| CliError::Usage(format!("--data must be JSON: {error}")))?;
                let body = AppendBody {
                    expected_version: append.expected,
                    command_id: append.command_id,
                    events: vec![EventBody {
                        event_type: append.event_type,
                        data,
                        metadata: append.metadata,
                        id: append.id,
                        personal: append.personal,
                    }],
                };
                Ok(remote.append(&append.stream, &body).await?)
            }
        }
    }

    /// The stream's version and up to `limit` events from `from`.
    pub(crate) async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> CliResult<(Version, Vec<RecordedEvent>)> {
        match self {
            Target::Store(store) => Ok((
                store.stream_version(stream).await?,
                store.read_stream(stream, from, limit).await?,
            )),
            Target::Server(remote) => {
                let page = remote.read_stream(stream, from, limit).await?;
                Ok((page.version, page.events))
            }
        }
    }

    /// Records of a partition from `from`, waiting up to `wait_ms` for the first, and
    /// the partition's high watermark.
    pub(crate) async fn fetch(
        &self,
        partition: Partition,
        from: Offset,
        limit: usize,
        wait_ms: u64,
    ) -> CliResult<(Vec<RecordedEvent>, Offset)> {
        match self {
            Target::Store(store) => {
                let wait = std::time::Duration::from_millis(wait_ms);
                let records = store.fetch(partition, from, limit, wait).await?;
                Ok((records, store.high_watermark(partition).await?))
            }
            Target::Server(remote) => {
                let page = remote.fetch(partition, from, limit, wait_ms, None).await?;
                Ok((page.events, page.high_watermark))
            }
        }
    }

    pub(crate) async fn list_streams(
        &self,
        category: Option<&str>,
        limit: usize,
        after: Option<&StreamId>,
    ) -> CliResult<Vec<StreamInfo>> {
        match self {
            Target::Store(store) => Ok(store.list_streams(category, limit, after).await?),
            Target::Server(remote) => Ok(remote.streams(category, limit, after).await?),
        }
    }

    /// Deletes `stream` (soft, or hard for good).
    pub(crate) async fn delete_stream(&self, stream: &StreamId, hard: bool) -> CliResult<StreamDeleted> {
        match self {
            Target::Store(store) => {
                let deletion = if hard { Deletion::Hard } else { Deletion::Soft };
                let outcome = store.delete_stream(stream, deletion).await?;
                Ok(StreamDeleted {
                    stream: stream.clone(),
                    partition: outcome.partition,
                    offset: outcome.first_offset,
                    version: outcome.first_version,
                    hard,
                })
            }
            Target::Server(remote) => Ok(remote.delete_stream(stream, hard).await?),
        }
    }

    /// Erases `subject`.
    pub(crate) async fn erase_subject(&self, subject: &Subject) -> CliResult<Erasure> {
        match self {
            Target::Store(store) => Ok(store.erase_subject(subject).await?),
            Target::Server(remote) => Ok(remote.erase_subject(subject).await?),
        }
    }

    /// The backend's name, the store's role and epoch, every partition's next offset
    /// and, through a follower's server, its replication lag.
    pub(crate) async fn partitions(&self) -> CliResult<Partitions> {
        match self {
            Target::Store(store) => {
                let replica = store.refresh_replica().await?;
                Ok(Partitions {
                    backend: store.backend_name().to_owned(),
                    role: replica.role().to_owned(),
                    leader_epoch: replica.epoch,
                    next_offsets: store.high_watermarks().await?,
                    replication_lag: None,
                })
            }
            Target::Server(remote) => {
                let info = remote.partitions().await?;
                let lags: Vec<Option<u64>> = info.partitions.iter().map(|p| p.replication_lag).collect();
                Ok(Partitions {
                    backend: info.backend,
                    role: info.role,
                    leader_epoch: info.leader_epoch,
                    next_offsets: info.partitions.iter().map(|p| p.next_offset).collect(),
                    replication_lag: lags
                        .iter()
                        .all(Option::is_some)
                        .then(|| lags.into_iter().flatten().collect()),
                })
            }
        }
    }

    pub(crate) async fn groups(&self) -> CliResult<Vec<GroupSummary>> {
        match self {
            Target::Store(store) => Ok(admin::list(store).await?),
            Target::Server(remote) => Ok(remote.groups().await?),
        }
    }

    pub(crate) async fn describe(&self, group: &str) -> CliResult<GroupDescription> {
        match self {
            Target::Store(store) => Ok(admin::describe(store, group).await?),
            Target::Server(remote) => Ok(remote.group(group).await?),
        }
    }

    pub(crate) async fn reset(&self, group: &str, to: ResetTo) -> CliResult<GroupDescription> {
        match self {
            Target::Store(store) => {
                admin::reset(store, group, to).await?;
                Ok(admin::describe(store, group).await?)
            }
            Target::Server(remote) => Ok(remote.reset(group, &to).await?),
        }
    }

    pub(crate) async fn set_paused(
        &self,
        group: &str,
        partitions: Option<Vec<Partition>>,
        paused: bool,
    ) -> CliResult<GroupDescription> {
        match self {
            Target::Store(store) => {
                if paused {
                    admin::pause(store, group, partitions).await?;
                } else {
                    admin::resume(store, group, partitions).await?;
                }
                Ok(admin::describe(store, group).await?)
            }
            Target::Server(remote) => Ok(remote.set_paused(group, partitions, paused).await?),
        }
    }

    pub(crate) async fn dead_letters(&self, group: Option<&str>) -> CliResult<Vec<DeadLetter>> {
        match self {
            Target::Store(store) => Ok(admin::dead_letters(store, group).await?),
            Target::Server(remote) => Ok(remote.dead_letters(group).await?),
        }
    }

    pub(crate) async fn dead_letter(&self, id: i64, retry: bool) -> CliResult<DeadLetter> {
        match self {
            Target::Store(store) if retry => Ok(admin::retry_dead_letter(store, id).await?),
            Target::Store(store) => Ok(admin::skip_dead_letter(store, id).await?),
            Target::Server(remote) if retry => Ok(remote.retry_dead_letter(id).await?),
            Target::Server(remote) => Ok(remote.skip_dead_letter(id).await?),
        }
    }
}
