//! Consumer groups on the SQL engines: the group protocol and dead letters as rows of
//! `annals_groups`, `annals_group_members`, `annals_group_offsets`,
//! `annals_dead_letters` and `annals_processed`. SQLite and PostgreSQL run the same
//! statements (`groups/*.sql`); where they differ (the clock, row locks, timestamps)
//! each engine fills the statements' `{…}` holes with its own [`Dialect`].
//!
//! The steps of the protocol run inside a caller's transaction: on PostgreSQL the
//! group's row is locked first, on SQLite the transaction is `IMMEDIATE`, so members of
//! one group take turns.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::NEXT_OFFSET_OF_P;
use crate::backend::Groups;
use crate::coordination::{
    assign, CommitMode, DeadLetter, DeadLetterStatus, Fence, GroupRecord, GroupRow, Joining, MemberRow, Membership,
    Mirrored, Owned, PartitionRow, ResetTargets, StartAt,
};
use crate::error::{Error, Result};
use crate::params;
use crate::position::{Offset, Partition};
use crate::readmodel::{Db, Param, Row, Tx};
use crate::record::RecordedEvent;

/// What one SQL engine writes differently.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// The database clock in milliseconds since the epoch: members on different
    /// machines compare heartbeats on one clock.
    now_ms: &'static str,
    /// After a `SELECT` whose rows stay locked until the transaction ends.
    for_update: &'static str,
    /// After a `SELECT` whose rows must not change until the transaction ends.
    for_share: &'static str,
    /// `annals_events.recorded_at` at or after `$2`, in µs since the epoch.
    recorded_since: &'static str,
    /// Statements with their holes filled, each once for the life of the process (a
    /// fixed few dozen): the commit of every batch reads one.
    filled: Mutex<Vec<(&'static str, &'static str)>>,
}

impl Dialect {
    pub(crate) const fn new(
        now_ms: &'static str,
        for_update: &'static str,
        for_share: &'static str,
        recorded_since: &'static str,
    ) -> Self {
        Dialect {
            now_ms,
            for_update,
            for_share,
            recorded_since,
            filled: Mutex::new(Vec::new()),
        }
    }

    /// `statement` with this dialect's words in its holes.
    pub(crate) fn fill(&self, statement: &'static str) -> &'static str {
        if !statement.contains('{') {
            return statement;
        }
        let mut filled = self.filled.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, done)) = filled.iter().find(|(raw, _)| *raw == statement) {
            return done;
        }
        let done: &'static str = Box::leak(
            statement
                .replace("{now}", self.now_ms)
                .replace("{for_update}", self.for_update)
                .replace("{for_share}", self.for_share)
                .replace("{recorded_since}", self.recorded_since)
                .into_boxed_str(),
        );
        filled.push((statement, done));
        done
    }
}

macro_rules! statement {
    ($name:literal) => {
        include_str!(concat!("groups/", $name, ".sql"))
    };
}

/// Consumer groups in the store's database.
#[derive(Clone)]
pub(crate) struct SqlGroups {
    db: Db,
    dialect: &'static Dialect,
}

impl SqlGroups {
    pub(crate) fn new(db: Db, dialect: &'static Dialect) -> Self {
        SqlGroups { db, dialect }
    }

    /// `statement` with this engine's words in its holes.
    fn sql(&self, statement: &'static str) -> &'static str {
        self.dialect.fill(statement)
    }

    /// Locks the group's row (creating the group on first use); returns its generation.
    async fn lock_group(&self, tx: &mut Tx, group: &str) -> Result<i64> {
        tx.execute(self.sql(statement!("lock_group_create")), params![group])
            .await?;
        tx.query_one(self.sql(statement!("lock_group")), params![group])
            .await?
            .get(0)
    }

    /// Bumps the generation and gives every partition an owner among the live members.
    async fn rebalance(&self, tx: &mut Tx, group: &str, generation: i64, partitions: u32) -> Result<i64> {
        let generation = generation + 1;
        let members = tx
            .query(statement!("members"), params![group])
            .await?
            .into_iter()
            .map(|row| row.get(0))
            .collect::<Result<Vec<String>>>()?;
        let mut current = vec![None; partitions as usize];
        for row in tx.query(statement!("owners"), params![group]).await? {
            let partition: u32 = row.get(0)?;
            if let Some(slot) = current.get_mut(partition as usize) {
                *slot = row.get::<Option<String>>(1)?;
            }
        }
        let next = assign(partitions, &members, &current);
        for (partition, (before, after)) in current.iter().zip(&next).enumerate() {
            if before != after {
                tx.execute(
                    statement!("set_owner"),
                    params![group, partition as u32, after.clone(), generation],
                )
                .await?;
            }
        }
        tx.execute(statement!("set_generation"), params![group, generation])
            .await?;
        tracing::info!(group, generation, members = members.len(), "rebalanced");
        Ok(generation)
    }

    async fn live_members(&self, tx: &mut Tx, group: &str) -> Result<Vec<MemberRow>> {
        tx.query(self.sql(statement!("live_members")), params![group])
            .await?
            .into_iter()
            .map(|row| {
                Ok(MemberRow {
                    member_id: row.get(0)?,
                    host: row.get(1)?,
                    joined_at: time(row.get(2)?),
                    heartbeat_at: time(row.get(3)?),
                })
            })
            .collect()
    }

    async fn find(&self, tx: &mut Tx, id: i64) -> Result<DeadLetter> {
        let row = tx
            .query_opt(statement!("dead_letter"), params![id])
            .await?
            .ok_or(Error::DeadLetterNotFound { id })?;
        dead_letter(&row)
    }

    /// Group `group`'s row, locked; `GroupNotFound` when there is none.
    async fn existing_group(&self, tx: &mut Tx, group: &str) -> Result<Row> {
        tx.query_opt(self.sql(statement!("group_locked")), params![group])
            .await?
            .ok_or_else(|| Error::GroupNotFound {
                group: group.to_owned(),
            })
    }
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn commit_mode(stored: Option<String>) -> Option<CommitMode> {
    stored.as_deref().and_then(CommitMode::parse)
}

fn dead_letter(row: &Row) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: row.get(0)?,
        group: row.get(1)?,
        partition: row.get(2)?,
        offset: row.get(3)?,
        stream: row.get(4)?,
        event_id: row.get(5)?,
        event_type: row.get(6)?,
        status: DeadLetterStatus::parse(&row.get::<String>(7)?, 7)?,
        error: row.get(8)?,
        attempts: row.get(9)?,
        created_at: time(row.get(10)?),
    })
}

#[async_trait]
impl Groups for SqlGroups {
    fn db(&self) -> Db {
        self.db.clone()
    }

    async fn heartbeat(&self, tx: &mut Tx, joining: &Joining<'_>, partitions: u32) -> Result<Membership> {
        let Joining {
            group,
            member,
            host,
            session_timeout_ms,
            start_at,
            mode,
        } = *joining;
        let mut generation = self.lock_group(tx, group).await?;
        let alive = tx
            .execute(
                self.sql(statement!("touch_member")),
                params![group, member, session_timeout_ms],
            )
            .await?;
        let mut changed = false;
        if alive == 0 {
            // A group's offsets are created by its first member, where the group
            // starts; later members find them and keep them.
            let start = match start_at {
                StartAt::Earliest => "0".to_owned(),
                StartAt::Latest => format!("COALESCE({}, 0)", NEXT_OFFSET_OF_P.trim_end()),
            };
            let create = self.sql(statement!("create_offsets")).replace("{start}", &start);
            tx.execute(&create, params![group]).await?;
            tx.execute(
                self.sql(statement!("add_member")),
                params![group, member, host, session_timeout_ms],
            )
            .await?;
            tx.execute(statement!("own_group"), params![group, mode.as_str()])
                .await?;
            changed = true;
        }
        let expired = tx
            .execute(self.sql(statement!("expire_members")), params![group])
            .await?;
        if changed || expired > 0 {
            generation = self.rebalance(tx, group, generation, partitions).await?;
        }
        let owned = tx
            .query(statement!("owned"), params![group, member])
            .await?
            .into_iter()
            .map(|row| {
                Ok(Owned {
                    partition: row.get(0)?,
                    generation: row.get(1)?,
                    paused: row.get(2)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let retries = tx
            .query(statement!("retry_partitions"), params![group])
            .await?
            .into_iter()
            .map(|row| row.get(0))
            .collect::<Result<Vec<_>>>()?;
        Ok(Membership {
            generation,
            owned,
            retries,
        })
    }

    async fn leave(&self, tx: &mut Tx, group: &str, member: &str, partitions: u32) -> Result<()> {
        let generation = self.lock_group(tx, group).await?;
        let left = tx.execute(statement!("remove_member"), params![group, member]).await?;
        if left > 0 {
            self.rebalance(tx, group, generation, partitions).await?;
        }
        Ok(())
    }

    async fn owned_offset(&self, tx: &mut Tx, fence: &Fence<'_>) -> Result<Offset> {
        let Fence {
            group,
            partition,
            member,
            generation,
        } = *fence;
        let row = tx
            .query_opt(
                statement!("owned_offset"),
                params![group, partition, member, generation],
            )
            .await?;
        match row {
            Some(row) => row.get(0),
            None => Err(fence.fenced()),
        }
    }

    async fn commit(&self, tx: &mut Tx, fence: &Fence<'_>, from: Offset, to: Offset) -> Result<()> {
        let Fence {
            group,
            partition,
            member,
            generation,
        } = *fence;
        let updated = tx
            .execute(
                self.sql(statement!("commit")),
                params![group, partition, member, generation, to.0 as i64, from.0 as i64],
            )
            .await?;
        if updated == 1 {
            Ok(())
        } else {
            Err(fence.fenced())
        }
    }

    async fn stop(&self, tx: &mut Tx, group: &str, partition: Partition, reason: &str) -> Result<()> {
        tx.execute(statement!("stop"), params![group, partition, reason])
            .await
            .map(drop)
    }

    async fn add_dead_letter(
        &self,
        tx: &mut Tx,
        group: &str,
        record: &RecordedEvent,
        status: DeadLetterStatus,
        error: &str,
        attempts: u32,
    ) -> Result<()> {
        tx.execute(
            self.sql(statement!("add_dead_letter")),
            params![
                group,
                record.partition,
                record.offset.0 as i64,
                record.stream.as_str(),
                record.event_id,
                record.event_type.as_str(),
                status.as_str(),
                error,
                attempts
            ],
        )
        .await
        .map(drop)
    }

    async fn partition_dead_letters(
        &self,
        tx: &mut Tx,
        group: &str,
        partition: Partition,
    ) -> Result<Vec<(i64, Offset, String, DeadLetterStatus)>> {
        tx.query(statement!("partition_dead_letters"), params![group, partition])
            .await?
            .into_iter()
            .map(|row| {
                let status = DeadLetterStatus::parse(&row.get::<String>(3)?, 3)?;
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, status))
            })
            .collect()
    }

    async fn resolve_dead_letter(&self, tx: &mut Tx, group: &str, id: i64) -> Result<()> {
        tx.execute(statement!("resolve_dead_letter"), params![group, id])
            .await
            .map(drop)
    }

    async fn fail_dead_letter(&self, tx: &mut Tx, group: &str, id: i64, error: &str, attempts: u32) -> Result<()> {
        tx.execute(statement!("fail_dead_letter"), params![group, id, error, attempts])
            .await
            .map(drop)
    }

    async fn park_behind(&self, tx: &mut Tx, group: &str, stream: &str, offset: Offset) -> Result<()> {
        tx.execute(statement!("park_behind"), params![group, stream, offset.0 as i64])
            .await
            .map(drop)
    }

    async fn processed(&self, group: &str, event_id: uuid::Uuid) -> Result<bool> {
        // A read: it neither waits for nor holds up the read-model writer.
        let found = self
            .db
            .query(statement!("processed"), vec![Param::from(group), Param::from(event_id)])
            .await?;
        Ok(!found.is_empty())
    }

    async fn mark_processed(&self, group: &str, event_id: uuid::Uuid) -> Result<bool> {
        let group = group.to_owned();
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    Ok(tx
                        .execute(statement!("mark_processed"), params![group, event_id])
                        .await?
                        == 1)
                })
            })
            .await
    }

    async fn list(&self) -> Result<Vec<GroupRow>> {
        let list = self.sql(statement!("list"));
        self.db
            .read_transaction(move |tx| {
                Box::pin(async move {
                    let mut groups = Vec::new();
                    for row in tx.query(list, &[]).await? {
                        let group: String = row.get(0)?;
                        let committed = tx
                            .query(statement!("committed"), params![&group])
                            .await?
                            .iter()
                            .map(|row| Ok((row.get(0)?, row.get(1)?)))
                            .collect::<Result<BTreeMap<_, _>>>()?;
                        groups.push(GroupRow {
                            group,
                            generation: row.get(1)?,
                            live_members: row.get(2)?,
                            commit_mode: commit_mode(row.get(3)?),
                            mirrored_from: row.get(4)?,
                            committed,
                        });
                    }
                    Ok(groups)
                })
            })
            .await
    }

    async fn describe(&self, group: &str) -> Result<Option<GroupRecord>> {
        let this = self.clone();
        let group = group.to_owned();
        self.db
            .read_transaction(move |tx| {
                Box::pin(async move {
                    let Some(row) = tx.query_opt(statement!("group"), params![&group]).await? else {
                        return Ok(None);
                    };
                    let members = this.live_members(tx, &group).await?;
                    let partitions = tx
                        .query(statement!("partitions"), params![&group])
                        .await?
                        .iter()
                        .map(|row| {
                            Ok(PartitionRow {
                                partition: row.get(0)?,
                                committed: row.get(1)?,
                                owner: row.get(2)?,
                                paused: row.get(3)?,
                                stopped_reason: row.get(4)?,
                            })
                        })
                        .collect::<Result<_>>()?;
                    let dead_letters = tx
                        .query_one(statement!("count_dead_letters"), params![&group])
                        .await?
                        .get(0)?;
                    Ok(Some(GroupRecord {
                        generation: row.get(0)?,
                        commit_mode: commit_mode(row.get(1)?),
                        mirrored_from: row.get(2)?,
                        members,
                        partitions,
                        dead_letters,
                    }))
                })
            })
            .await
    }

    async fn mirror(&self, mirrored: Mirrored) -> Result<bool> {
        let this = self.clone();
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    let Mirrored {
                        group,
                        leader,
                        generation,
                        partitions,
                        dead_letters,
                    } = mirrored;
                    // Only a follower copies, and it stays one until this commits:
                    // promoted, its groups are its own. The group's row is locked as a
                    // joining member locks it, so a member joining here meanwhile
                    // either comes after (and makes the group this store's own) or is
                    // seen.
                    let leader_url: Option<String> = tx.query_one(this.sql(statement!("role")), &[]).await?.get(0)?;
                    if leader_url.is_none() {
                        return Ok(false);
                    }
                    if let Some(row) = tx
                        .query_opt(this.sql(statement!("group_locked")), params![&group])
                        .await?
                    {
                        if row.get::<Option<String>>(2)?.is_none() {
                            return Ok(false);
                        }
                    }
                    tx.execute(
                        this.sql(statement!("mirror_group")),
                        params![&group, generation, CommitMode::AtLeastOnce.as_str(), &leader],
                    )
                    .await?;
                    let upsert = this.sql(statement!("mirror_offset"));
                    for p in partitions {
                        tx.execute(
                            upsert,
                            params![
                                &group,
                                p.partition,
                                p.committed.0 as i64,
                                i64::from(p.paused),
                                p.stopped_reason
                            ],
                        )
                        .await?;
                    }
                    tx.execute(statement!("delete_dead_letters"), params![&group]).await?;
                    for letter in dead_letters {
                        tx.execute(
                            statement!("mirror_dead_letter"),
                            params![
                                &group,
                                letter.partition,
                                letter.offset.0 as i64,
                                letter.stream,
                                letter.event_id,
                                letter.event_type,
                                letter.status.as_str(),
                                letter.error,
                                i64::from(letter.attempts),
                                letter.created_at.timestamp_millis()
                            ],
                        )
                        .await?;
                    }
                    Ok(true)
                })
            })
            .await
    }

    async fn reset(&self, group: &str, targets: ResetTargets) -> Result<()> {
        let this = self.clone();
        let group = group.to_owned();
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    this.existing_group(tx, &group).await?;
                    let members = this.live_members(tx, &group).await?.len() as u64;
                    if members > 0 {
                        return Err(Error::GroupHasMembers { group, members });
                    }
                    let targets = match targets {
                        ResetTargets::Offsets(offsets) => offsets,
                        ResetTargets::Since { at, high_watermarks } => {
                            let first = this.sql(statement!("first_offset_since"));
                            let mut offsets = BTreeMap::new();
                            for (partition, high_watermark) in high_watermarks.into_iter().enumerate() {
                                let partition = Partition(partition as u32);
                                let found: Option<Offset> = tx
                                    .query_one(first, params![partition, at.timestamp_micros()])
                                    .await?
                                    .get(0)?;
                                offsets.insert(partition, found.unwrap_or(high_watermark));
                            }
                            offsets
                        }
                    };
                    let reset = this.sql(statement!("reset_offset"));
                    for (partition, offset) in targets {
                        tx.execute(reset, params![&group, partition, offset.0 as i64]).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn set_paused(&self, group: &str, partitions: Option<Vec<Partition>>, paused: bool) -> Result<()> {
        let group = group.to_owned();
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    tx.query_opt(statement!("group"), params![&group])
                        .await?
                        .ok_or_else(|| Error::GroupNotFound { group: group.clone() })?;
                    let all: Vec<Partition> = match partitions {
                        Some(partitions) => partitions,
                        None => tx
                            .query(statement!("group_partitions"), params![&group])
                            .await?
                            .iter()
                            .map(|row| row.get(0))
                            .collect::<Result<_>>()?,
                    };
                    for partition in all {
                        tx.execute(statement!("set_paused"), params![&group, partition, i64::from(paused)])
                            .await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn dead_letters(&self, group: Option<&str>) -> Result<Vec<DeadLetter>> {
        let group = group.map(str::to_owned);
        self.db
            .read_transaction(move |tx| {
                Box::pin(async move {
                    let rows = match group {
                        Some(group) => tx.query(statement!("dead_letters_of_group"), params![group]).await?,
                        None => tx.query(statement!("dead_letters"), &[]).await?,
                    };
                    rows.iter().map(dead_letter).collect()
                })
            })
            .await
    }

    async fn retry_dead_letter(&self, id: i64) -> Result<DeadLetter> {
        let this = self.clone();
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    let letter = this.find(tx, id).await?;
                    tx.execute(
                        statement!("retry_from"),
                        params![letter.group.as_str(), letter.stream.as_str(), letter.offset.0 as i64],
                    )
                    .await?;
                    this.find(tx, id).await
                })
            })
            .await
    }

    async fn skip_dead_letter(&self, id: i64) -> Result<DeadLetter> {
        let this = self.clone();
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    let letter = this.find(tx, id).await?;
                    tx.execute(statement!("delete_dead_letter"), params![id]).await?;
                    tx.execute(
                        statement!("release_parked"),
                        params![letter.group.as_str(), letter.stream.as_str(), letter.offset.0 as i64],
                    )
                    .await?;
                    Ok(letter)
                })
            })
            .await
    }

    async fn take_over(&self, tx: &mut Tx, group: &str, replay: &str) -> Result<Vec<(Partition, Offset)>> {
        self.existing_group(tx, group).await?;
        let offsets: Vec<(Partition, Offset)> = tx
            .query(statement!("committed"), params![replay])
            .await?
            .iter()
            .map(|row| Ok((row.get(0)?, row.get(1)?)))
            .collect::<Result<_>>()?;
        let reset = self.sql(statement!("reset_offset"));
        for (partition, committed) in &offsets {
            tx.execute(reset, params![group, *partition, *committed]).await?;
        }
        tx.execute(statement!("delete_dead_letters"), params![group]).await?;
        tx.execute(statement!("take_dead_letters"), params![group, replay])
            .await?;
        forget_in(tx, replay).await?;
        Ok(offsets)
    }

    async fn forget(&self, group: &str) -> Result<()> {
        let group = group.to_owned();
        self.db
            .transaction(move |tx| Box::pin(async move { forget_in(tx, &group).await }))
            .await
    }
}

/// Removes every row of `group`.
async fn forget_in(tx: &mut Tx, group: &str) -> Result<()> {
    for statement in statement!("forget").split(";\n") {
        tx.execute(statement, params![group]).await?;
    }
    Ok(())
}
