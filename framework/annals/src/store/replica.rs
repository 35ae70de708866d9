//! A store's place in replication: a leader (it takes appends) or a follower of a
//! leader (it takes only records shipped from it, applied verbatim), and its leader
//! epoch, bumped on every promotion.

use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::{Error, Result};
use crate::params;
use crate::position::{Offset, Partition};
use crate::readmodel::{Engine, Param, Tx};
use crate::record::RecordedEvent;

/// Whom a store follows, and its leader epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// The leader's URL when this store is a follower; `None` on a leader.
    pub leader: Option<String>,
    /// The leader epoch: 0 for a store never promoted, bumped by each promotion.
    pub epoch: u64,
}

impl Replica {
    /// `"leader"` or `"follower"`.
    pub fn role(&self) -> &'static str {
        if self.leader.is_some() {
            "follower"
        } else {
            "leader"
        }
    }
}

impl Store {
    /// This store's role and epoch, as of its last change in this process (see
    /// [`refresh_replica`](Store::refresh_replica)).
    pub fn replica(&self) -> Replica {
        self.inner.replica.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_replica(&self, replica: Replica) {
        *self.inner.replica.write().unwrap_or_else(|p| p.into_inner()) = replica;
    }

    /// Reads the role and epoch from the database (another process may have promoted
    /// this store).
    pub async fn refresh_replica(&self) -> Result<Replica> {
        let Ok(db) = self.read_models() else {
            return Ok(self.replica());
        };
        let rows = db
            .query("SELECT leader_url, leader_epoch FROM annals_store", vec![])
            .await?;
        let replica = match rows.first() {
            Some(row) => Replica {
                leader: row.get(0)?,
                epoch: row.get(1)?,
            },
            None => Replica::default(),
        };
        self.set_replica(replica.clone());
        Ok(replica)
    }

    /// Makes this store a follower of `leader`: from now on it refuses appends
    /// (`ReadOnlyReplica`) and takes only replicated records.
    pub async fn follow(&self, leader: &str) -> Result<Replica> {
        let leader_url = leader.to_owned();
        self.read_models()?
            .transaction(move |tx| {
                Box::pin(async move {
                    tx.execute("UPDATE annals_store SET leader_url = $1", params![leader_url])
                        .await
                        .map(drop)
                })
            })
            .await?;
        self.refresh_replica().await
    }

    /// Makes this store a leader with the next leader epoch. Returns the new state.
    pub async fn promote(&self) -> Result<Replica> {
        self.read_models()?
            .transaction(|tx| {
                Box::pin(async move {
                    tx.execute(
                        "UPDATE annals_store SET leader_url = NULL, leader_epoch = leader_epoch + 1",
                        &[],
                    )
                    .await
                    .map(drop)
                })
            })
            .await?;
        self.refresh_replica().await
    }

    /// Applies records shipped from the leader, verbatim: same partition, offset,
    /// stream, version, event id, type, payload, metadata and time. They must all be of
    /// one partition and continue it exactly (the first at its next offset, no gap), or
    /// nothing is written (`ReplicationGap`). Command ids are rebuilt from the records'
    /// metadata in the same transaction, so a retried command is a duplicate on this
    /// store too after a failover (I5). A store that is not a follower takes none
    /// (`NotAReplica`).
    pub async fn apply_replicated(&self, records: Vec<RecordedEvent>) -> Result<()> {
        let Some(first) = records.first() else { return Ok(()) };
        let partition = first.partition;
        self.check_partition(partition)?;
        let start = first.offset;
        for (i, record) in records.iter().enumerate() {
            if record.partition != partition || record.offset != start + i as Offset {
                return Err(Error::ReplicationGap {
                    partition,
                    first: record.offset,
                    next: start + i as Offset,
                });
            }
        }
        let next = start + records.len() as Offset;
        self.read_models()?
            .transaction(move |tx| Box::pin(async move { insert_verbatim(tx, partition, start, &records).await }))
            .await?;
        self.inner.backend.announce(partition, next);
        Ok(())
    }
}

async fn insert_verbatim(tx: &mut Tx, partition: Partition, start: Offset, records: &[RecordedEvent]) -> Result<()> {
    // Still a follower, and it stays one until this commits: on PostgreSQL a promotion
    // waits for the row lock; on SQLite writes take turns anyway.
    let role = match tx.engine() {
        Engine::Sqlite => "SELECT leader_url FROM annals_store",
        Engine::Postgres => "SELECT leader_url FROM annals_store FOR SHARE",
    };
    if tx.query_one(role, &[]).await?.get::<Option<String>>(0)?.is_none() {
        return Err(Error::NotAReplica);
    }
    let next: Option<i64> = tx
        .query_one(crate::backend::HIGH_WATERMARK, params![partition])
        .await?
        .get(0)?;
    let next = next.unwrap_or(0) as Offset;
    if next != start {
        return Err(Error::ReplicationGap {
            partition,
            first: start,
            next,
        });
    }
    let tx_engine = tx.engine();
    let insert = match tx_engine {
        Engine::Sqlite => {
            r#"INSERT INTO annals_events
                 (partition, "offset", stream_id, version, event_id, event_type, payload, metadata, recorded_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"#
        }
        Engine::Postgres => {
            r#"INSERT INTO annals_events
                 (partition, "offset", stream_id, version, event_id, event_type, payload, metadata, recorded_at)
               VALUES ($1, $2, $3, $4, CAST($5 AS uuid), $6, CAST($7 AS json), CAST($8 AS json),
                       TIMESTAMPTZ 'epoch' + $9 * INTERVAL '1 microsecond')"#
        }
    };
    // SQLite keeps uuids as 16 bytes, PostgreSQL as uuid (sent as text).
    let uuid = |id: uuid::Uuid| match tx_engine {
        Engine::Sqlite => Param::Blob(Some(id.as_bytes().to_vec())),
        Engine::Postgres => Param::from(id),
    };
    for record in records {
        let metadata = serde_json::to_string(&record.metadata).map_err(Error::InvalidJson)?;
        tx.execute(
            insert,
            &[
                Param::from(partition),
                Param::Int(Some(record.offset as i64)),
                Param::from(record.stream.as_str()),
                Param::Int(Some(record.version as i64)),
                uuid(record.event_id),
                Param::from(record.event_type.as_str()),
                Param::from(record.payload.get()),
                Param::from(metadata),
                Param::Int(Some(record.recorded_at.timestamp_micros())),
            ],
        )
        .await?;
    }
    // One row per command id: its records are consecutive, and an append cut by the
    // end of a batch is extended by the next one.
    let command_ids = format!(
        "INSERT INTO annals_command_ids \
             (command_id, stream_id, partition, first_offset, last_offset, first_version, last_version) \
         VALUES ({}, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (command_id) DO UPDATE SET last_offset = excluded.last_offset, \
             last_version = excluded.last_version",
        match tx_engine {
            Engine::Sqlite => "$1",
            Engine::Postgres => "CAST($1 AS uuid)",
        }
    );
    for run in records.chunk_by(|a, b| a.metadata.command_id == b.metadata.command_id && a.stream == b.stream) {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            continue;
        };
        let Some(command) = first.metadata.command_id else {
            continue;
        };
        tx.execute(
            &command_ids,
            &[
                uuid(command),
                Param::from(first.stream.as_str()),
                Param::from(partition),
                Param::Int(Some(first.offset as i64)),
                Param::Int(Some(last.offset as i64)),
                Param::Int(Some(first.version as i64)),
                Param::Int(Some(last.version as i64)),
            ],
        )
        .await?;
    }
    Ok(())
}
