//! Consumer groups in memory: the rows the SQL engines keep, in maps, under the same
//! protocol. Group work runs in transactions of this engine's own: a transaction holds
//! the groups' lock, works on a copy of them, and puts the copy back when it commits,
//! so no other transaction sees its changes before, and a rolled-back one leaves
//! nothing. There is no SQL here: a projection whose handler runs statements fails
//! with `Unsupported`; consumers (at least once) run as on the other engines.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Mutex as AsyncMutex;
use uuid::Uuid;

use super::Log;
use crate::backend::admit::LogView;
use crate::backend::Groups;
use crate::coordination::{
    assign, CommitMode, DeadLetter, DeadLetterStatus, Fence, GroupRecord, GroupRow, Joining, MemberRow, Membership,
    Mirrored, Owned, PartitionRow, ResetTargets, StartAt,
};
use crate::error::{Error, Result};
use crate::position::{Offset, Partition};
use crate::readmodel::{Answer, Database, Db, Engine, Param, Row, Statements, Tx, Work};
use crate::record::RecordedEvent;

/// Everything groups keep.
#[derive(Debug, Clone, Default)]
struct State {
    groups: BTreeMap<String, Group>,
    /// Every group's dead letters, by id.
    dead_letters: BTreeMap<i64, DeadLetter>,
    last_dead_letter_id: i64,
}

#[derive(Debug, Clone)]
struct Group {
    generation: i64,
    commit_mode: Option<CommitMode>,
    mirrored_from: Option<String>,
    members: BTreeMap<String, Member>,
    partitions: BTreeMap<Partition, PartitionRow>,
    owner_generations: BTreeMap<Partition, i64>,
}

#[derive(Debug, Clone)]
struct Member {
    host: String,
    joined_at: i64,
    heartbeat_at: i64,
    session_timeout_ms: i64,
}

impl Member {
    fn live(&self, now: i64) -> bool {
        self.heartbeat_at.saturating_add(self.session_timeout_ms) >= now
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn time(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn not_found(group: &str) -> Error {
    Error::GroupNotFound {
        group: group.to_owned(),
    }
}

impl State {
    /// The group, created on first use (generation 0), as the SQL engines lock it.
    fn lock_group(&mut self, group: &str) -> &mut Group {
        self.groups.entry(group.to_owned()).or_insert_with(|| Group {
            generation: 0,
            commit_mode: None,
            mirrored_from: None,
            members: BTreeMap::new(),
            partitions: BTreeMap::new(),
            owner_generations: BTreeMap::new(),
        })
    }

    fn group(&mut self, group: &str) -> Result<&mut Group> {
        self.groups.get_mut(group).ok_or_else(|| not_found(group))
    }

    fn letters_of<'a>(&'a mut self, group: &'a str) -> impl Iterator<Item = &'a mut DeadLetter> + 'a {
        self.dead_letters
            .values_mut()
            .filter(move |letter| letter.group == group)
    }

    fn forget(&mut self, group: &str) {
        self.groups.remove(group);
        self.dead_letters.retain(|_, letter| letter.group != group);
    }

    fn add_dead_letter(&mut self, mut letter: DeadLetter) {
        self.last_dead_letter_id += 1;
        letter.id = self.last_dead_letter_id;
        self.dead_letters.insert(letter.id, letter);
    }

    fn find(&self, id: i64) -> Result<DeadLetter> {
        self.dead_letters
            .get(&id)
            .cloned()
            .ok_or(Error::DeadLetterNotFound { id })
    }
}

impl Group {
    /// Bumps the generation and gives every partition an owner among the members.
    fn rebalance(&mut self, group: &str, partitions: u32) {
        self.generation += 1;
        let members: Vec<String> = self.members.keys().cloned().collect();
        let mut current = vec![None; partitions as usize];
        for (partition, row) in &self.partitions {
            if let Some(slot) = current.get_mut(partition.index()) {
                *slot = row.owner.clone();
            }
        }
        let next = assign(partitions, &members, &current);
        for (partition, (before, after)) in current.iter().zip(&next).enumerate() {
            let partition = Partition(partition as u32);
            if before != after {
                if let Some(row) = self.partitions.get_mut(&partition) {
                    row.owner = after.clone();
                    self.owner_generations.insert(partition, self.generation);
                }
            }
        }
        tracing::info!(
            group,
            generation = self.generation,
            members = members.len(),
            "rebalanced"
        );
    }

    /// The committed offset of a partition the fence's member owns.
    fn owned(&mut self, fence: &Fence<'_>) -> Result<&mut PartitionRow> {
        let generation = self.owner_generations.get(&fence.partition).copied();
        match self.partitions.get_mut(&fence.partition) {
            Some(row) if row.owner.as_deref() == Some(fence.member) && generation == Some(fence.generation) => Ok(row),
            _ => Err(fence.fenced()),
        }
    }

    fn live_members(&self, now: i64) -> Vec<MemberRow> {
        self.members
            .iter()
            .filter(|(_, member)| member.live(now))
            .map(|(id, member)| MemberRow {
                member_id: id.clone(),
                host: member.host.clone(),
                joined_at: time(member.joined_at),
                heartbeat_at: time(member.heartbeat_at),
            })
            .collect()
    }
}

/// The groups, locked (see [`MemoryGroups::lock`]).
pub(super) struct GroupsGuard<'a>(tokio::sync::MutexGuard<'a, State>);

impl GroupsGuard<'_> {
    /// A follower's truncation removed `partition` from `from` on: dead letters of the
    /// removed records go, and offsets past the new end come back to it. A
    /// transactional group that had handled removed records has their effects in its
    /// read model: its partition stops, for an operator to rebuild the group.
    pub(super) fn truncate(&mut self, partition: Partition, from: Offset) {
        let state = &mut self.0;
        state
            .dead_letters
            .retain(|_, letter| letter.partition != partition || letter.offset < from);
        for group in state.groups.values_mut() {
            let transactional = group.commit_mode.unwrap_or(CommitMode::Transactional) == CommitMode::Transactional;
            if let Some(row) = group.partitions.get_mut(&partition).filter(|row| row.committed > from) {
                if transactional {
                    row.paused = true;
                    row.stopped_reason =
                        Some("records this group had handled were removed by a truncation: rebuild the group".into());
                }
                row.committed = from;
            }
        }
    }
}

/// A transaction: the groups as this transaction sees and changes them.
struct MemoryTx {
    state: State,
}

#[async_trait]
impl Statements for MemoryTx {
    fn engine(&self) -> Engine {
        Engine::Memory
    }

    async fn execute(&mut self, _sql: &str, _params: &[Param]) -> Result<u64> {
        Err(no_sql())
    }

    async fn execute_many(&mut self, _sql: &str, _rows: &[&[Param]]) -> Result<u64> {
        Err(no_sql())
    }

    async fn query(&mut self, _sql: &str, _params: &[Param]) -> Result<Vec<Row>> {
        Err(no_sql())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

fn no_sql() -> Error {
    Error::Unsupported {
        what: "SQL read models",
    }
}

/// Transactions on the groups.
struct Transactions {
    state: Arc<AsyncMutex<State>>,
}

#[async_trait]
impl Database for Transactions {
    fn engine(&self) -> Engine {
        Engine::Memory
    }

    async fn query(&self, _sql: &str, _params: Vec<Param>) -> Result<Vec<Row>> {
        Err(no_sql())
    }

    async fn transaction(&self, work: Work, writes: bool) -> Result<Answer> {
        not_inside_a_transaction()?;
        let mut state = self.state.clone().lock_owned().await;
        let mut tx = Tx::new(MemoryTx { state: state.clone() });
        let answer = IN_TRANSACTION.scope((), work(&mut tx)).await?;
        if writes {
            *state = tx.into_inner::<MemoryTx>().state;
        }
        Ok(answer)
    }
}

tokio::task_local! {
    /// Set while a group transaction's work runs on this task.
    static IN_TRANSACTION: ();
}

/// A transaction holds the groups' lock until it ends, so group work it started on its
/// own task (another transaction, a processed id, an operator's call) would wait for
/// it forever; it is refused instead. (The SQL engines run such work on another
/// connection.)
fn not_inside_a_transaction() -> Result<()> {
    match IN_TRANSACTION.try_with(|_| ()) {
        Ok(()) => Err(Error::Unsupported {
            what: "group work inside a group transaction of a memory store",
        }),
        Err(_) => Ok(()),
    }
}

/// The groups of a memory store.
pub(super) struct MemoryGroups {
    state: Arc<AsyncMutex<State>>,
    /// (group, event id) marked as done by at-least-once consumers: apart from the
    /// groups, as the SQL engines mark them in transactions of their own, and because
    /// it only grows.
    processed: Mutex<HashSet<(String, Uuid)>>,
    log: Arc<Mutex<Log>>,
    db: Db,
}

impl MemoryGroups {
    pub(super) fn new(log: Arc<Mutex<Log>>) -> Self {
        let state = Arc::new(AsyncMutex::new(State::default()));
        MemoryGroups {
            db: Db::new(Arc::new(Transactions { state: state.clone() })),
            state,
            processed: Mutex::default(),
            log,
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `work` on the groups as one transaction of its own.
    async fn write<T>(&self, work: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        not_inside_a_transaction()?;
        let mut state = self.state.lock().await;
        let mut copy = state.clone();
        let value = work(&mut copy)?;
        *state = copy;
        Ok(value)
    }

    async fn read<T>(&self, read: impl FnOnce(&State) -> T) -> Result<T> {
        not_inside_a_transaction()?;
        Ok(read(&*self.state.lock().await))
    }

    /// Holds off every group transaction while the guard lives.
    pub(super) async fn lock(&self) -> Result<GroupsGuard<'_>> {
        not_inside_a_transaction()?;
        Ok(GroupsGuard(self.state.lock().await))
    }
}

/// The groups as the transaction `tx` sees them.
fn state(tx: &mut Tx) -> Result<&mut State> {
    tx.engine_tx::<MemoryTx>()
        .map(|tx| &mut tx.state)
        .ok_or(Error::Unsupported {
            what: "a transaction of another engine",
        })
}

#[async_trait]
impl Groups for MemoryGroups {
    fn db(&self) -> Db {
        self.db.clone()
    }

    async fn heartbeat(&self, tx: &mut Tx, joining: &Joining<'_>, partitions: u32) -> Result<Membership> {
        let Joining {
            group: name,
            member,
            host,
            session_timeout_ms,
            start_at,
            mode,
        } = *joining;
        let starts: Vec<Offset> = match start_at {
            StartAt::Earliest => vec![Offset(0); partitions as usize],
            StartAt::Latest => Partition::all(partitions).map(|p| self.log().next_offset(p)).collect(),
        };
        let state = state(tx)?;
        let now = now_ms();
        let group = state.lock_group(name);
        let mut changed = false;
        match group.members.get_mut(member) {
            Some(alive) => {
                alive.heartbeat_at = now;
                alive.session_timeout_ms = session_timeout_ms;
            }
            None => {
                // A group's offsets are created by its first member, where the group
                // starts; later members find them and keep them.
                for (partition, start) in Partition::all(partitions).zip(starts) {
                    group.partitions.entry(partition).or_insert(PartitionRow {
                        partition,
                        committed: start,
                        owner: None,
                        paused: false,
                        stopped_reason: None,
                    });
                }
                group.members.insert(
                    member.to_owned(),
                    Member {
                        host: host.to_owned(),
                        joined_at: now,
                        heartbeat_at: now,
                        session_timeout_ms,
                    },
                );
                group.commit_mode = Some(mode);
                group.mirrored_from = None;
                changed = true;
            }
        }
        let before = group.members.len();
        group.members.retain(|_, member| member.live(now));
        if changed || group.members.len() < before {
            group.rebalance(name, partitions);
        }
        let owned = group
            .partitions
            .values()
            .filter(|row| row.owner.as_deref() == Some(member))
            .map(|row| Owned {
                partition: row.partition,
                generation: group.owner_generations.get(&row.partition).copied().unwrap_or(0),
                paused: row.paused,
            })
            .collect();
        let generation = group.generation;
        let retries: BTreeSet<Partition> = state
            .letters_of(name)
            .filter(|letter| letter.status == DeadLetterStatus::Retry)
            .map(|letter| letter.partition)
            .collect();
        Ok(Membership {
            generation,
            owned,
            retries: retries.into_iter().collect(),
        })
    }

    async fn leave(&self, tx: &mut Tx, group: &str, member: &str, partitions: u32) -> Result<()> {
        let state = state(tx)?.lock_group(group);
        if state.members.remove(member).is_some() {
            state.rebalance(group, partitions);
        }
        Ok(())
    }

    async fn owned_offset(&self, tx: &mut Tx, fence: &Fence<'_>) -> Result<Offset> {
        let group = state(tx)?.groups.get_mut(fence.group).ok_or_else(|| fence.fenced())?;
        Ok(group.owned(fence)?.committed)
    }

    async fn commit(&self, tx: &mut Tx, fence: &Fence<'_>, from: Offset, to: Offset) -> Result<()> {
        let group = state(tx)?.groups.get_mut(fence.group).ok_or_else(|| fence.fenced())?;
        let row = group.owned(fence)?;
        if row.committed != from {
            return Err(fence.fenced());
        }
        row.committed = to;
        Ok(())
    }

    async fn stop(&self, tx: &mut Tx, group: &str, partition: Partition, reason: &str) -> Result<()> {
        if let Some(row) = state(tx)?
            .groups
            .get_mut(group)
            .and_then(|group| group.partitions.get_mut(&partition))
        {
            row.paused = true;
            row.stopped_reason = Some(reason.to_owned());
        }
        Ok(())
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
        let state = state(tx)?;
        let known = state
            .dead_letters
            .values()
            .any(|d| d.group == group && d.partition == record.partition && d.offset == record.offset);
        if !known {
            state.add_dead_letter(DeadLetter {
                id: 0,
                group: group.to_owned(),
                partition: record.partition,
                offset: record.offset,
                stream: record.stream.as_str().to_owned(),
                event_id: record.event_id.to_string(),
                event_type: record.event_type.clone(),
                status,
                error: error.to_owned(),
                attempts,
                created_at: time(now_ms()),
            });
        }
        Ok(())
    }

    async fn partition_dead_letters(
        &self,
        tx: &mut Tx,
        group: &str,
        partition: Partition,
    ) -> Result<Vec<(i64, Offset, String, DeadLetterStatus)>> {
        let mut letters: Vec<_> = state(tx)?
            .letters_of(group)
            .filter(|letter| letter.partition == partition)
            .map(|letter| (letter.id, letter.offset, letter.stream.clone(), letter.status))
            .collect();
        letters.sort_by_key(|(_, offset, _, _)| *offset);
        Ok(letters)
    }

    async fn resolve_dead_letter(&self, tx: &mut Tx, group: &str, id: i64) -> Result<()> {
        let state = state(tx)?;
        if state.dead_letters.get(&id).is_some_and(|letter| letter.group == group) {
            state.dead_letters.remove(&id);
        }
        Ok(())
    }

    async fn fail_dead_letter(&self, tx: &mut Tx, group: &str, id: i64, error: &str, attempts: u32) -> Result<()> {
        if let Some(letter) = state(tx)?
            .dead_letters
            .get_mut(&id)
            .filter(|letter| letter.group == group)
        {
            letter.status = DeadLetterStatus::Failed;
            letter.error = error.to_owned();
            letter.attempts = letter.attempts.saturating_add(attempts);
        }
        Ok(())
    }

    async fn park_behind(&self, tx: &mut Tx, group: &str, stream: &str, offset: Offset) -> Result<()> {
        for letter in state(tx)?.letters_of(group) {
            if letter.stream == stream && letter.status == DeadLetterStatus::Retry && letter.offset > offset {
                letter.status = DeadLetterStatus::Parked;
            }
        }
        Ok(())
    }

    async fn processed(&self, group: &str, event_id: Uuid) -> Result<bool> {
        let processed = self.processed.lock().unwrap_or_else(|p| p.into_inner());
        Ok(processed.contains(&(group.to_owned(), event_id)))
    }

    async fn mark_processed(&self, group: &str, event_id: Uuid) -> Result<bool> {
        let mut processed = self.processed.lock().unwrap_or_else(|p| p.into_inner());
        Ok(processed.insert((group.to_owned(), event_id)))
    }

    async fn list(&self) -> Result<Vec<GroupRow>> {
        let now = now_ms();
        self.read(|state| {
            state
                .groups
                .iter()
                .map(|(name, group)| GroupRow {
                    group: name.clone(),
                    generation: group.generation,
                    live_members: group.members.values().filter(|m| m.live(now)).count() as u64,
                    commit_mode: group.commit_mode,
                    mirrored_from: group.mirrored_from.clone(),
                    committed: group
                        .partitions
                        .values()
                        .map(|row| (row.partition, row.committed))
                        .collect(),
                })
                .collect()
        })
        .await
    }

    async fn describe(&self, name: &str) -> Result<Option<GroupRecord>> {
        let now = now_ms();
        self.read(|state| {
            let group = state.groups.get(name)?;
            Some(GroupRecord {
                generation: group.generation,
                commit_mode: group.commit_mode,
                mirrored_from: group.mirrored_from.clone(),
                members: group.live_members(now),
                partitions: group.partitions.values().cloned().collect(),
                dead_letters: state.dead_letters.values().filter(|d| d.group == name).count() as u64,
            })
        })
        .await
    }

    async fn mirror(&self, mirrored: Mirrored) -> Result<bool> {
        // Only a follower copies, and it stays one until this commits: a role change
        // waits for the groups' lock (see `MemoryBackend::change_role`).
        self.write(|state| {
            if self.log().replica.leader.is_none() {
                return Ok(false);
            }
            if state
                .groups
                .get(&mirrored.group)
                .is_some_and(|g| g.mirrored_from.is_none())
            {
                return Ok(false);
            }
            let group = state.lock_group(&mirrored.group);
            group.generation = mirrored.generation;
            group.commit_mode = Some(CommitMode::AtLeastOnce);
            group.mirrored_from = Some(mirrored.leader.clone());
            for row in &mirrored.partitions {
                group.partitions.insert(
                    row.partition,
                    PartitionRow {
                        owner: None,
                        ..row.clone()
                    },
                );
                group.owner_generations.insert(row.partition, 0);
            }
            state.dead_letters.retain(|_, letter| letter.group != mirrored.group);
            for letter in &mirrored.dead_letters {
                state.add_dead_letter(DeadLetter {
                    group: mirrored.group.clone(),
                    ..letter.clone()
                });
            }
            Ok(true)
        })
        .await
    }

    async fn reset(&self, name: &str, targets: ResetTargets) -> Result<()> {
        let targets = match targets {
            ResetTargets::Offsets(offsets) => offsets,
            ResetTargets::Since { at, high_watermarks } => {
                let at = at.timestamp_micros();
                let log = self.log();
                high_watermarks
                    .iter()
                    .enumerate()
                    .map(|(partition, high_watermark)| {
                        let first = log
                            .partitions
                            .get(partition)
                            .and_then(|records| records.iter().find(|r| r.recorded_at.timestamp_micros() >= at))
                            .map_or(*high_watermark, |record| record.offset);
                        (Partition(partition as u32), first)
                    })
                    .collect::<BTreeMap<_, _>>()
            }
        };
        let now = now_ms();
        self.write(|state| {
            let group = state.group(name)?;
            let members = group.members.values().filter(|m| m.live(now)).count() as u64;
            if members > 0 {
                return Err(Error::GroupHasMembers {
                    group: name.to_owned(),
                    members,
                });
            }
            for (partition, offset) in targets {
                if let Some(row) = group.partitions.get_mut(&partition) {
                    row.committed = offset;
                }
            }
            Ok(())
        })
        .await
    }

    async fn set_paused(&self, name: &str, partitions: Option<Vec<Partition>>, paused: bool) -> Result<()> {
        self.write(|state| {
            let group = state.group(name)?;
            let all = partitions.unwrap_or_else(|| group.partitions.keys().copied().collect());
            for partition in all {
                if let Some(row) = group.partitions.get_mut(&partition) {
                    row.paused = paused;
                    row.stopped_reason = None;
                }
            }
            Ok(())
        })
        .await
    }

    async fn dead_letters(&self, group: Option<&str>) -> Result<Vec<DeadLetter>> {
        let mut letters: Vec<DeadLetter> = self
            .read(|state| {
                state
                    .dead_letters
                    .values()
                    .filter(|letter| group.is_none_or(|group| letter.group == group))
                    .cloned()
                    .collect()
            })
            .await?;
        letters.sort_by(|a, b| (&a.group, a.partition, a.offset).cmp(&(&b.group, b.partition, b.offset)));
        Ok(letters)
    }

    async fn retry_dead_letter(&self, id: i64) -> Result<DeadLetter> {
        self.write(|state| {
            let found = state.find(id)?;
            for letter in state.letters_of(&found.group) {
                if letter.stream == found.stream && letter.offset >= found.offset {
                    letter.status = DeadLetterStatus::Retry;
                }
            }
            state.find(id)
        })
        .await
    }

    async fn skip_dead_letter(&self, id: i64) -> Result<DeadLetter> {
        self.write(|state| {
            let found = state.find(id)?;
            state.dead_letters.remove(&id);
            for letter in state.letters_of(&found.group) {
                if letter.stream == found.stream
                    && letter.offset > found.offset
                    && letter.status == DeadLetterStatus::Parked
                {
                    letter.status = DeadLetterStatus::Retry;
                }
            }
            Ok(found)
        })
        .await
    }

    async fn take_over(&self, tx: &mut Tx, name: &str, replay: &str) -> Result<Vec<(Partition, Offset)>> {
        let state = state(tx)?;
        state.group(name)?;
        let offsets: Vec<(Partition, Offset)> = state
            .groups
            .get(replay)
            .map(|replayed| {
                replayed
                    .partitions
                    .values()
                    .map(|row| (row.partition, row.committed))
                    .collect()
            })
            .unwrap_or_default();
        let group = state.group(name)?;
        for (partition, committed) in &offsets {
            if let Some(row) = group.partitions.get_mut(partition) {
                row.committed = *committed;
            }
        }
        state.dead_letters.retain(|_, letter| letter.group != name);
        for letter in state.letters_of(replay) {
            letter.group = name.to_owned();
        }
        state.groups.remove(replay);
        Ok(offsets)
    }

    async fn forget(&self, group: &str) -> Result<()> {
        self.write(|state| {
            state.forget(group);
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    //! I6 on the memory engine, on the trait itself: a partition has one owner per
    //! generation, a commit from a stale generation or over a moved offset is fenced,
    //! and a transaction that fails (or only reads) leaves the groups as they were.

    use super::*;

    fn groups(partitions: u32) -> Arc<MemoryGroups> {
        let log = Log {
            partitions: (0..partitions).map(|_| Vec::new()).collect(),
            ..Log::default()
        };
        Arc::new(MemoryGroups::new(Arc::new(Mutex::new(log))))
    }

    async fn heartbeat(groups: &Arc<MemoryGroups>, member: &'static str) -> Membership {
        let g = groups.clone();
        groups
            .db()
            .transaction(move |tx| {
                Box::pin(async move {
                    let joining = Joining {
                        group: "g",
                        member,
                        host: "test",
                        session_timeout_ms: 60_000,
                        start_at: StartAt::Earliest,
                        mode: CommitMode::AtLeastOnce,
                    };
                    g.heartbeat(tx, &joining, 4).await
                })
            })
            .await
            .expect("heartbeat")
    }

    /// Commits `from..to` as `member` of `generation`, then fails the transaction when
    /// `then_fail` (or commits nothing when `read_only`).
    async fn commit(
        groups: &Arc<MemoryGroups>,
        (member, generation, partition): (&'static str, i64, Partition),
        (from, to): (Offset, Offset),
        then_fail: bool,
        read_only: bool,
    ) -> Result<()> {
        let (g, db) = (groups.clone(), groups.db());
        if read_only {
            db.read_transaction(move |tx| {
                Box::pin(fenced_commit(g, tx, member, generation, partition, from, to, then_fail))
            })
            .await
        } else {
            db.transaction(move |tx| Box::pin(fenced_commit(g, tx, member, generation, partition, from, to, then_fail)))
                .await
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn fenced_commit(
        groups: Arc<MemoryGroups>,
        tx: &mut Tx,
        member: &'static str,
        generation: i64,
        partition: Partition,
        from: Offset,
        to: Offset,
        then_fail: bool,
    ) -> Result<()> {
        let fence = Fence {
            group: "g",
            partition,
            member,
            generation,
        };
        groups.commit(tx, &fence, from, to).await?;
        if then_fail {
            return Err(Error::Closed);
        }
        Ok(())
    }

    async fn committed(groups: &Arc<MemoryGroups>, partition: Partition) -> Offset {
        let record = groups.describe("g").await.expect("describe").expect("the group");
        record.partitions[partition.index()].committed
    }

    #[tokio::test]
    async fn stale_generations_and_moved_offsets_are_fenced() {
        let groups = groups(4);
        let a = heartbeat(&groups, "a").await;
        assert_eq!(a.owned.len(), 4, "the first member owns every partition");
        let b = heartbeat(&groups, "b").await;
        assert!(b.generation > a.generation, "a join is a new generation");
        let moved = b.owned[0];
        let stale = a
            .owned
            .iter()
            .find(|owned| owned.partition == moved.partition)
            .expect("a owned it before");

        // a's commit on a partition it lost, in its old generation: fenced.
        let fenced = commit(
            &groups,
            ("a", stale.generation, moved.partition),
            (Offset(0), Offset(3)),
            false,
            false,
        )
        .await;
        assert!(matches!(fenced, Err(Error::Fenced { .. })), "{fenced:?}");
        assert_eq!(committed(&groups, moved.partition).await, 0);

        // b's commit goes through; another from the old offset is fenced.
        commit(
            &groups,
            ("b", moved.generation, moved.partition),
            (Offset(0), Offset(5)),
            false,
            false,
        )
        .await
        .expect("the owner commits");
        let again = commit(
            &groups,
            ("b", moved.generation, moved.partition),
            (Offset(0), Offset(6)),
            false,
            false,
        )
        .await;
        assert!(matches!(again, Err(Error::Fenced { .. })), "{again:?}");
        assert_eq!(committed(&groups, moved.partition).await, 5);
    }

    #[tokio::test]
    async fn a_failed_or_read_only_transaction_leaves_the_groups_unchanged() {
        let groups = groups(4);
        let a = heartbeat(&groups, "a").await;
        let owned = a.owned[0];
        let failed = commit(
            &groups,
            ("a", owned.generation, owned.partition),
            (Offset(0), Offset(7)),
            true,
            false,
        )
        .await;
        assert!(matches!(failed, Err(Error::Closed)), "{failed:?}");
        assert_eq!(committed(&groups, owned.partition).await, 0, "a failed commit stayed");
        commit(
            &groups,
            ("a", owned.generation, owned.partition),
            (Offset(0), Offset(7)),
            false,
            true,
        )
        .await
        .expect("the read transaction runs");
        assert_eq!(committed(&groups, owned.partition).await, 0, "a read transaction wrote");
    }
}
