//! Operating groups: list and describe them with their lag, pause and resume
//! partitions, reset offsets, and list, retry or skip dead letters.
//!
//! Lag is the partition's high watermark minus the group's committed offset. A member is
//! live while its last heartbeat is younger than its session timeout.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::coordinator::{now_ms, validate_group};
use super::CommitMode;
use crate::error::{Error, Result};
use crate::params;
use crate::position::{Offset, Partition};
use crate::readmodel::{Engine, Row, Tx};
use crate::store::{EventStore, Store};

/// One group in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    /// The group's name.
    pub group: String,
    /// Its generation (bumped on every membership change).
    pub generation: i64,
    /// Live members.
    pub members: u64,
    /// Records not yet committed, over all partitions.
    pub lag: u64,
    /// How it commits, as its members last said (`None` for a group no member of
    /// this version has joined).
    pub commit_mode: Option<CommitMode>,
    /// On a follower: the leader this group's offsets and dead letters are copied
    /// from (see [`mirror`]); `None` for a group of this store's own.
    pub mirrored_from: Option<String>,
}

/// A live member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its id.
    pub member_id: String,
    /// The host it runs on.
    pub host: String,
    /// When it joined.
    pub joined_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// The partitions it owns.
    pub partitions: Vec<Partition>,
}

/// A group's position in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The partition.
    pub partition: Partition,
    /// The next offset the group will process.
    pub committed: Offset,
    /// The partition's next offset.
    pub high_watermark: Offset,
    /// `high_watermark - committed`.
    pub lag: u64,
    /// The member working on it, if any.
    pub owner: Option<String>,
    /// Paused by an operator or stopped by the failure policy.
    pub paused: bool,
    /// Why the failure policy stopped it.
    pub stopped_reason: Option<String>,
}

/// Everything about one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDescription {
    /// The group's name.
    pub group: String,
    /// Its generation.
    pub generation: i64,
    /// Live members.
    pub members: Vec<MemberInfo>,
    /// Per partition, in order.
    pub partitions: Vec<PartitionState>,
    /// Total lag.
    pub lag: u64,
    /// Dead letters waiting (failed, parked or marked for retry).
    pub dead_letters: u64,
    /// How it commits, as its members last said.
    pub commit_mode: Option<CommitMode>,
    /// On a follower: the leader it is copied from, if it is (see [`mirror`]).
    pub mirrored_from: Option<String>,
}

/// Where [`reset`] moves a group's committed offsets. Its JSON form is the HTTP API's:
/// `"earliest"`, `"latest"`, `{"timestamp": rfc3339}` or `{"offsets": {"p": o}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetTo {
    /// Offset 0 of every partition: replay everything.
    Earliest,
    /// The high watermarks: skip everything written so far.
    Latest,
    /// The first record written at or after this time, per partition.
    Timestamp(DateTime<Utc>),
    /// Explicit offsets for some partitions; the others keep theirs.
    Offsets(BTreeMap<Partition, Offset>),
}

/// A record a group gave up on, or one parked behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its id (for retry and skip).
    pub id: i64,
    /// The group.
    pub group: String,
    /// Where the record is.
    pub partition: Partition,
    /// Where the record is.
    pub offset: Offset,
    /// The record's stream.
    pub stream: String,
    /// The record's event id.
    pub event_id: String,
    /// The record's type.
    pub event_type: String,
    /// Where it stands.
    pub status: DeadLetterStatus,
    /// The handler's last error (empty when parked).
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was dead-lettered.
    pub created_at: DateTime<Utc>,
}

/// Where a dead letter stands. In JSON and in the store: `"failed"`, `"parked"` or
/// `"retry"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterStatus {
    /// The handler gave up on it.
    Failed,
    /// Waiting behind an earlier dead letter of its stream.
    Parked,
    /// To be handled again by the owner of its partition.
    Retry,
}

impl DeadLetterStatus {
    /// `"failed"`, `"parked"` or `"retry"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterStatus::Failed => "failed",
            DeadLetterStatus::Parked => "parked",
            DeadLetterStatus::Retry => "retry",
        }
    }

    /// The status stored as `text`.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        match text {
            "failed" => Ok(DeadLetterStatus::Failed),
            "parked" => Ok(DeadLetterStatus::Parked),
            "retry" => Ok(DeadLetterStatus::Retry),
            _ => Err(Error::ColumnType {
                index: 7,
                expected: "a dead-letter status (failed, parked or retry)",
                found: "other text",
            }),
        }
    }
}

impl std::fmt::Display for DeadLetterStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

async fn in_tx<T, F>(store: &Store, work: F) -> Result<T>
where
    T: Send + 'static,
    F: for<'t> FnOnce(&'t mut Tx) -> futures::future::BoxFuture<'t, Result<T>> + Send + 'static,
{
    store.read_models()?.transaction(work).await
}

/// A read: one consistent view, without the write lock.
async fn in_read_tx<T, F>(store: &Store, work: F) -> Result<T>
where
    T: Send + 'static,
    F: for<'t> FnOnce(&'t mut Tx) -> futures::future::BoxFuture<'t, Result<T>> + Send + 'static,
{
    store.read_models()?.read_transaction(work).await
}

/// Every group, by name.
pub async fn list(store: &Store) -> Result<Vec<GroupSummary>> {
    let watermarks = store.high_watermarks().await?;
    let rows = in_read_tx(store, |tx| {
        Box::pin(async move {
            let now = now_ms(tx.engine());
            tx.query(
                &format!(
                    "SELECT g.group_name, g.generation,
                        (SELECT count(*) FROM annals_group_members m
                          WHERE m.group_name = g.group_name AND m.heartbeat_at + m.session_timeout_ms >= {now}),
                        g.commit_mode, g.mirrored_from
                     FROM annals_groups g ORDER BY g.group_name"
                ),
                &[],
            )
            .await
        })
    })
    .await?;
    let mut groups = Vec::with_capacity(rows.len());
    for row in rows {
        let group: String = row.get(0)?;
        let committed = committed_offsets(store, &group).await?;
        groups.push(GroupSummary {
            lag: lag(&watermarks, &committed),
            group,
            generation: row.get(1)?,
            members: row.get(2)?,
            commit_mode: commit_mode(row.get(3)?),
            mirrored_from: row.get(4)?,
        });
    }
    Ok(groups)
}

fn lag(watermarks: &[Offset], committed: &BTreeMap<Partition, Offset>) -> u64 {
    watermarks
        .iter()
        .enumerate()
        .map(|(p, hw)| hw.saturating_sub(committed.get(&(p as Partition)).copied().unwrap_or(0)))
        .sum()
}

async fn committed_offsets(store: &Store, group: &str) -> Result<BTreeMap<Partition, Offset>> {
    let group = group.to_owned();
    in_read_tx(store, move |tx| {
        Box::pin(async move {
            tx.query(
                "SELECT partition, committed FROM annals_group_offsets WHERE group_name = $1",
                params![group],
            )
            .await?
            .into_iter()
            .map(|row| Ok((row.get(0)?, row.get(1)?)))
            .collect()
        })
    })
    .await
}

/// One group's members, partitions, lag and dead letters.
pub async fn describe(store: &Store, group: &str) -> Result<GroupDescription> {
    validate_group(group)?;
    let watermarks = store.high_watermarks().await?;
    let name = group.to_owned();
    let (group_row, members, partitions, dead_letters) = in_read_tx(store, move |tx| {
        Box::pin(async move {
            let group = tx
                .query_opt(
                    "SELECT generation, commit_mode, mirrored_from FROM annals_groups WHERE group_name = $1",
                    params![&name],
                )
                .await?
                .ok_or_else(|| Error::GroupNotFound { group: name.clone() })?;
            let members = live_members(tx, &name).await?;
            let partitions = tx
                .query(
                    "SELECT partition, committed, owner, paused, stopped_reason FROM annals_group_offsets
                     WHERE group_name = $1 ORDER BY partition",
                    params![&name],
                )
                .await?;
            let dead: u64 = tx
                .query_one(
                    "SELECT count(*) FROM annals_dead_letters WHERE group_name = $1",
                    params![&name],
                )
                .await?
                .get(0)?;
            Ok((group, members, partitions, dead))
        })
    })
    .await?;
    let generation: i64 = group_row.get(0)?;
    let live: Vec<&str> = members.iter().map(|m| m.0.as_str()).collect();
    let mut states = Vec::with_capacity(partitions.len());
    for row in &partitions {
        let partition: Partition = row.get(0)?;
        let committed: Offset = row.get(1)?;
        let high_watermark = watermarks.get(partition as usize).copied().unwrap_or(0);
        let owner: Option<String> = row.get(2)?;
        states.push(PartitionState {
            partition,
            committed,
            high_watermark,
            lag: high_watermark.saturating_sub(committed),
            // An owner whose session expired is not working on it any more.
            owner: owner.filter(|o| live.contains(&o.as_str())),
            paused: row.get(3)?,
            stopped_reason: row.get(4)?,
        });
    }
    let members = members
        .into_iter()
        .map(|(member_id, host, joined_at, heartbeat_at)| MemberInfo {
            partitions: states
                .iter()
                .filter(|s| s.owner.as_deref() == Some(member_id.as_str()))
                .map(|s| s.partition)
                .collect(),
            member_id,
            host,
            joined_at: time(joined_at),
            heartbeat_at: time(heartbeat_at),
        })
        .collect();
    Ok(GroupDescription {
        group: group.to_owned(),
        generation,
        members,
        lag: states.iter().map(|s| s.lag).sum(),
        partitions: states,
        dead_letters,
        commit_mode: commit_mode(group_row.get(1)?),
        mirrored_from: group_row.get(2)?,
    })
}

fn commit_mode(stored: Option<String>) -> Option<CommitMode> {
    stored.as_deref().and_then(CommitMode::parse)
}

/// Copies a leader's at-least-once group into this follower: its committed offsets
/// (never past what this store holds: a record it lacks may be another after a
/// failover) and its dead letters of records this store holds. A follower keeps
/// doing so (see `annals follow`), so that after a promotion the group's consumers
/// resume about where they were instead of from offset 0; at least once, as ever.
///
/// A group this store already has as its own (one that members joined here) is left
/// alone: returns `false`, as on a store that is not a follower (any more). So is a
/// group that is not at-least-once: a projection's
/// read model lives in its leader's database, and its offsets mean nothing here.
/// The first member that joins a copied group here makes it this store's own.
pub async fn mirror(
    store: &Store,
    leader: &str,
    group: &GroupDescription,
    dead_letters: &[DeadLetter],
) -> Result<bool> {
    validate_group(&group.group)?;
    if group.commit_mode != Some(CommitMode::AtLeastOnce) {
        return Ok(false);
    }
    let watermarks = store.high_watermarks().await?;
    let offsets: Vec<(Partition, Offset, bool, Option<String>)> = group
        .partitions
        .iter()
        .filter(|p| p.partition < store.partition_count())
        .map(|p| {
            let held = watermarks[p.partition as usize];
            (p.partition, p.committed.min(held), p.paused, p.stopped_reason.clone())
        })
        .collect();
    let letters: Vec<DeadLetter> = dead_letters
        .iter()
        .filter(|d| {
            d.group == group.group
                && watermarks
                    .get(d.partition as usize)
                    .is_some_and(|held| d.offset < *held)
        })
        .cloned()
        .collect();
    let (name, leader, generation) = (group.group.clone(), leader.to_owned(), group.generation);
    in_tx(store, move |tx| {
        Box::pin(async move {
            // Only a follower copies, and it stays one until this commits: promoted,
            // its groups are its own. The group's row is locked as a joining member
            // locks it, so a member joining here meanwhile either comes after (and
            // makes the group this store's own) or is seen.
            let (role, group_row) = match tx.engine() {
                Engine::Sqlite => ("SELECT leader_url FROM annals_store", ""),
                Engine::Postgres => ("SELECT leader_url FROM annals_store FOR SHARE", " FOR UPDATE"),
            };
            if tx.query_one(role, &[]).await?.get::<Option<String>>(0)?.is_none() {
                return Ok(false);
            }
            let own = tx
                .query_opt(
                    &format!("SELECT mirrored_from FROM annals_groups WHERE group_name = $1{group_row}"),
                    params![&name],
                )
                .await?;
            if let Some(row) = own {
                if row.get::<Option<String>>(0)?.is_none() {
                    return Ok(false);
                }
            }
            let now = now_ms(tx.engine());
            tx.execute(
                &format!(
                    "INSERT INTO annals_groups (group_name, generation, created_at, commit_mode, mirrored_from) \
                     VALUES ($1, $2, {now}, $3, $4) \
                     ON CONFLICT (group_name) DO UPDATE SET generation = excluded.generation, \
                         commit_mode = excluded.commit_mode, mirrored_from = excluded.mirrored_from \
                     WHERE annals_groups.mirrored_from IS NOT NULL"
                ),
                params![&name, generation, CommitMode::AtLeastOnce.as_str(), &leader],
            )
            .await?;
            for (partition, committed, paused, stopped_reason) in offsets {
                tx.execute(
                    &format!(
                        "INSERT INTO annals_group_offsets \
                             (group_name, partition, committed, owner, owner_generation, paused, stopped_reason, updated_at) \
                         VALUES ($1, $2, $3, NULL, 0, $4, $5, {now}) \
                         ON CONFLICT (group_name, partition) DO UPDATE SET committed = excluded.committed, \
                             owner = NULL, paused = excluded.paused, stopped_reason = excluded.stopped_reason, \
                             updated_at = excluded.updated_at"
                    ),
                    params![&name, partition, committed as i64, i64::from(paused), stopped_reason],
                )
                .await?;
            }
            tx.execute("DELETE FROM annals_dead_letters WHERE group_name = $1", params![&name])
                .await?;
            for letter in letters {
                tx.execute(
                    r#"INSERT INTO annals_dead_letters
                           (group_name, partition, "offset", stream_id, event_id, event_type, status, error, attempts, created_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
                    params![
                        &name,
                        letter.partition,
                        letter.offset as i64,
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

async fn live_members(tx: &mut Tx, group: &str) -> Result<Vec<(String, String, i64, i64)>> {
    let now = now_ms(tx.engine());
    tx.query(
        &format!(
            "SELECT member_id, host, joined_at, heartbeat_at FROM annals_group_members
             WHERE group_name = $1 AND heartbeat_at + session_timeout_ms >= {now} ORDER BY member_id"
        ),
        params![group],
    )
    .await?
    .into_iter()
    .map(|row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
    .collect()
}

/// Moves the committed offsets of `group`; refused while it has live members.
pub async fn reset(store: &Store, group: &str, to: ResetTo) -> Result<()> {
    validate_group(group)?;
    let watermarks = store.high_watermarks().await?;
    let mut targets: BTreeMap<Partition, Offset> = BTreeMap::new();
    match &to {
        ResetTo::Earliest => targets.extend((0..watermarks.len() as Partition).map(|p| (p, 0))),
        ResetTo::Latest => targets.extend(watermarks.iter().enumerate().map(|(p, hw)| (p as Partition, *hw))),
        ResetTo::Offsets(offsets) => {
            for (&partition, &offset) in offsets {
                let Some(&high_watermark) = watermarks.get(partition as usize) else {
                    return Err(Error::PartitionOutOfRange {
                        partition,
                        partition_count: store.partition_count(),
                    });
                };
                if offset > high_watermark {
                    return Err(Error::OffsetOutOfRange {
                        partition,
                        offset,
                        high_watermark,
                    });
                }
                targets.insert(partition, offset);
            }
        }
        ResetTo::Timestamp(_) => {}
    }
    let name = group.to_owned();
    in_tx(store, move |tx| {
        Box::pin(async move {
            tx.query_opt(
                &format!(
                    "SELECT generation FROM annals_groups WHERE group_name = $1{}",
                    if tx.engine() == Engine::Postgres {
                        " FOR UPDATE"
                    } else {
                        ""
                    }
                ),
                params![&name],
            )
            .await?
            .ok_or_else(|| Error::GroupNotFound { group: name.clone() })?;
            let members = live_members(tx, &name).await?.len() as u64;
            if members > 0 {
                return Err(Error::GroupHasMembers { group: name, members });
            }
            if let ResetTo::Timestamp(at) = to {
                for (partition, high_watermark) in watermarks.iter().enumerate() {
                    let first = first_offset_at(tx, partition as Partition, at).await?;
                    targets.insert(partition as Partition, first.unwrap_or(*high_watermark));
                }
            }
            let now = now_ms(tx.engine());
            for (partition, offset) in targets {
                tx.execute(
                    &format!(
                        "UPDATE annals_group_offsets SET committed = $3, updated_at = {now}
                         WHERE group_name = $1 AND partition = $2"
                    ),
                    params![&name, partition, offset as i64],
                )
                .await?;
            }
            Ok(())
        })
    })
    .await
}

/// The first offset of `partition` written at or after `at`.
async fn first_offset_at(tx: &mut Tx, partition: Partition, at: DateTime<Utc>) -> Result<Option<Offset>> {
    // recorded_at never goes back within a partition, so the first match is the answer.
    let condition = match tx.engine() {
        Engine::Sqlite => "recorded_at >= $2",
        Engine::Postgres => "recorded_at >= to_timestamp($2 / 1000000.0)",
    };
    tx.query_one(
        &format!(r#"SELECT min("offset") FROM annals_events WHERE partition = $1 AND {condition}"#),
        params![partition, at.timestamp_micros()],
    )
    .await?
    .get(0)
}

/// Pauses `partitions` (all when `None`) of `group`: their owners stop after the batch
/// in hand, within one heartbeat.
pub async fn pause(store: &Store, group: &str, partitions: Option<Vec<Partition>>) -> Result<()> {
    set_paused(store, group, partitions, true).await
}

/// Resumes paused or stopped partitions (all when `None`) of `group`.
pub async fn resume(store: &Store, group: &str, partitions: Option<Vec<Partition>>) -> Result<()> {
    set_paused(store, group, partitions, false).await
}

async fn set_paused(store: &Store, group: &str, partitions: Option<Vec<Partition>>, paused: bool) -> Result<()> {
    validate_group(group)?;
    if let Some(bad) = partitions.iter().flatten().find(|p| **p >= store.partition_count()) {
        return Err(Error::PartitionOutOfRange {
            partition: *bad,
            partition_count: store.partition_count(),
        });
    }
    let name = group.to_owned();
    in_tx(store, move |tx| {
        Box::pin(async move {
            tx.query_opt("SELECT 1 FROM annals_groups WHERE group_name = $1", params![&name])
                .await?
                .ok_or_else(|| Error::GroupNotFound { group: name.clone() })?;
            let all: Vec<Partition> = match partitions {
                Some(partitions) => partitions,
                None => tx
                    .query(
                        "SELECT partition FROM annals_group_offsets WHERE group_name = $1",
                        params![&name],
                    )
                    .await?
                    .iter()
                    .map(|row| row.get(0))
                    .collect::<Result<_>>()?,
            };
            for partition in all {
                tx.execute(
                    "UPDATE annals_group_offsets SET paused = $3, stopped_reason = NULL
                     WHERE group_name = $1 AND partition = $2",
                    params![&name, partition, i64::from(paused)],
                )
                .await?;
            }
            Ok(())
        })
    })
    .await
}

const DEAD_LETTER_COLUMNS: &str =
    r#"id, group_name, partition, "offset", stream_id, event_id, event_type, status, error, attempts, created_at"#;

fn dead_letter(row: &Row) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: row.get(0)?,
        group: row.get(1)?,
        partition: row.get(2)?,
        offset: row.get(3)?,
        stream: row.get(4)?,
        event_id: row.get(5)?,
        event_type: row.get(6)?,
        status: DeadLetterStatus::parse(&row.get::<String>(7)?)?,
        error: row.get(8)?,
        attempts: row.get(9)?,
        created_at: time(row.get(10)?),
    })
}

/// Dead letters, of one group or all, in group and offset order.
pub async fn dead_letters(store: &Store, group: Option<&str>) -> Result<Vec<DeadLetter>> {
    if let Some(group) = group {
        validate_group(group)?;
    }
    let group = group.map(str::to_owned);
    in_read_tx(store, move |tx| {
        Box::pin(async move {
            let rows = match group {
                Some(group) => {
                    tx.query(
                        &format!(
                            r#"SELECT {DEAD_LETTER_COLUMNS} FROM annals_dead_letters WHERE group_name = $1
                               ORDER BY partition, "offset""#
                        ),
                        params![group],
                    )
                    .await?
                }
                None => {
                    tx.query(
                        &format!(
                            r#"SELECT {DEAD_LETTER_COLUMNS} FROM annals_dead_letters
                               ORDER BY group_name, partition, "offset""#
                        ),
                        &[],
                    )
                    .await?
                }
            };
            rows.iter().map(dead_letter).collect()
        })
    })
    .await
}

async fn find(tx: &mut Tx, id: i64) -> Result<DeadLetter> {
    let row = tx
        .query_opt(
            &format!("SELECT {DEAD_LETTER_COLUMNS} FROM annals_dead_letters WHERE id = $1"),
            params![id],
        )
        .await?
        .ok_or(Error::DeadLetterNotFound { id })?;
    dead_letter(&row)
}

/// Marks dead letter `id`, and the records of its stream parked behind it, for the
/// group's owner of the partition to handle again, in offset order. Returns it as marked.
pub async fn retry_dead_letter(store: &Store, id: i64) -> Result<DeadLetter> {
    in_tx(store, move |tx| {
        Box::pin(async move {
            let letter = find(tx, id).await?;
            tx.execute(
                r#"UPDATE annals_dead_letters SET status = 'retry'
                   WHERE group_name = $1 AND stream_id = $2 AND "offset" >= $3"#,
                params![letter.group.as_str(), letter.stream.as_str(), letter.offset as i64],
            )
            .await?;
            find(tx, id).await
        })
    })
    .await
}

/// Gives up on dead letter `id` for good: it is removed, and the records of its stream
/// parked behind it are handed to the group again, in offset order.
pub async fn skip_dead_letter(store: &Store, id: i64) -> Result<DeadLetter> {
    in_tx(store, move |tx| {
        Box::pin(async move {
            let letter = find(tx, id).await?;
            tx.execute("DELETE FROM annals_dead_letters WHERE id = $1", params![id])
                .await?;
            tx.execute(
                r#"UPDATE annals_dead_letters SET status = 'retry'
                   WHERE group_name = $1 AND stream_id = $2 AND "offset" > $3 AND status = 'parked'"#,
                params![letter.group.as_str(), letter.stream.as_str(), letter.offset as i64],
            )
            .await?;
            Ok(letter)
        })
    })
    .await
}
