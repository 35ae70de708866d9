//! The group protocol, as statements on the store's database: join and heartbeat,
//! rebalance, leave, and the fenced offset commit. Every step runs inside a caller's
//! transaction; on PostgreSQL the group's row is locked first, on SQLite the
//! transaction is `IMMEDIATE`, so members of one group take turns.

use super::assign::assign;
use super::{CommitMode, StartAt};
use crate::error::{Error, Result};
use crate::params;
use crate::position::{Offset, Partition};
use crate::readmodel::{Engine, Tx};

/// The database clock in milliseconds since the epoch, as SQL: members on different
/// machines compare heartbeats on one clock.
pub(crate) fn now_ms(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        Engine::Postgres => "CAST(extract(epoch FROM clock_timestamp()) * 1000 AS bigint)",
    }
}

/// A group name: 1–200 bytes of `[A-Za-z0-9_.:@-]`, as a stream id.
pub(crate) fn validate_group(name: &str) -> Result<()> {
    match crate::stream::invalid_reason(name) {
        None => Ok(()),
        Some(_) => Err(Error::InvalidGroupName { name: name.to_owned() }),
    }
}

/// A partition this member owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owned {
    pub(crate) partition: Partition,
    /// The generation the member was given it in; commits are fenced on it.
    pub(crate) generation: i64,
    pub(crate) paused: bool,
}

/// What a heartbeat tells a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    pub(crate) generation: i64,
    pub(crate) owned: Vec<Owned>,
    /// Partitions with dead letters waiting to be retried.
    pub(crate) retries: Vec<Partition>,
}

impl Membership {
    /// The partitions to work on: owned and not paused.
    pub(crate) fn working(&self) -> Vec<Partition> {
        self.owned.iter().filter(|o| !o.paused).map(|o| o.partition).collect()
    }
}

/// Locks the group's row (creating the group on first use); returns its generation.
async fn lock_group(tx: &mut Tx, group: &str) -> Result<i64> {
    let now = now_ms(tx.engine());
    tx.execute(
        &format!(
            "INSERT INTO annals_groups (group_name, generation, created_at) VALUES ($1, 0, {now}) \
             ON CONFLICT (group_name) DO NOTHING"
        ),
        params![group],
    )
    .await?;
    let lock = match tx.engine() {
        Engine::Postgres => " FOR UPDATE",
        Engine::Sqlite => "",
    };
    tx.query_one(
        &format!("SELECT generation FROM annals_groups WHERE group_name = $1{lock}"),
        params![group],
    )
    .await?
    .get(0)
}

/// A member as it heartbeats.
pub(crate) struct Joining<'a> {
    pub(crate) group: &'a str,
    pub(crate) member: &'a str,
    pub(crate) host: &'a str,
    pub(crate) session_timeout_ms: i64,
    /// Where the group starts, if this member is its first.
    pub(crate) start_at: StartAt,
    pub(crate) mode: CommitMode,
}

/// Joins (or stays in) a group, removes members whose session expired, rebalances when
/// membership changed, and returns what the member owns. A member that joins records
/// the group's commit mode and makes a group copied from a leader this store's own.
pub(crate) async fn heartbeat(tx: &mut Tx, joining: &Joining<'_>, partitions: Partition) -> Result<Membership> {
    let Joining {
        group,
        member,
        host,
        session_timeout_ms,
        start_at,
        mode,
    } = *joining;
    let mut generation = lock_group(tx, group).await?;
    let now = now_ms(tx.engine());
    let alive = tx
        .execute(
            &format!(
                "UPDATE annals_group_members SET heartbeat_at = {now}, session_timeout_ms = $3 \
                 WHERE group_name = $1 AND member_id = $2"
            ),
            params![group, member, session_timeout_ms],
        )
        .await?;
    let mut changed = false;
    if alive == 0 {
        // A group's offsets are created by its first member, where the group starts;
        // later members find them and keep them.
        let start = match start_at {
            StartAt::Earliest => "0".to_owned(),
            StartAt::Latest => format!("COALESCE({}, 0)", crate::backend::NEXT_OFFSET_OF_P),
        };
        tx.execute(
            &format!(
                "INSERT INTO annals_group_offsets \
                     (group_name, partition, committed, owner, owner_generation, paused, updated_at) \
                 SELECT $1, p.partition, {start}, NULL, 0, 0, {now} FROM annals_partitions p WHERE true \
                 ON CONFLICT (group_name, partition) DO NOTHING"
            ),
            params![group],
        )
        .await?;
        tx.execute(
            &format!(
                "INSERT INTO annals_group_members \
                     (group_name, member_id, host, joined_at, heartbeat_at, session_timeout_ms) \
                 VALUES ($1, $2, $3, {now}, {now}, $4)"
            ),
            params![group, member, host, session_timeout_ms],
        )
        .await?;
        tx.execute(
            "UPDATE annals_groups SET commit_mode = $2, mirrored_from = NULL WHERE group_name = $1",
            params![group, mode.as_str()],
        )
        .await?;
        changed = true;
    }
    let expired = tx
        .execute(
            &format!(
                "DELETE FROM annals_group_members WHERE group_name = $1 AND heartbeat_at + session_timeout_ms < {now}"
            ),
            params![group],
        )
        .await?;
    if changed || expired > 0 {
        generation = rebalance(tx, group, generation, partitions).await?;
    }
    let owned = tx
        .query(
            "SELECT partition, owner_generation, paused FROM annals_group_offsets \
             WHERE group_name = $1 AND owner = $2 ORDER BY partition",
            params![group, member],
        )
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
        .query(
            "SELECT DISTINCT partition FROM annals_dead_letters WHERE group_name = $1 AND status = 'retry' \
             ORDER BY partition",
            params![group],
        )
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

/// Bumps the generation and gives every partition an owner among the live members.
async fn rebalance(tx: &mut Tx, group: &str, generation: i64, partitions: Partition) -> Result<i64> {
    let generation = generation + 1;
    let members = tx
        .query(
            "SELECT member_id FROM annals_group_members WHERE group_name = $1 ORDER BY member_id",
            params![group],
        )
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect::<Result<Vec<String>>>()?;
    let mut current = vec![None; partitions as usize];
    for row in tx
        .query(
            "SELECT partition, owner FROM annals_group_offsets WHERE group_name = $1",
            params![group],
        )
        .await?
    {
        let partition: u32 = row.get(0)?;
        if let Some(slot) = current.get_mut(partition as usize) {
            *slot = row.get::<Option<String>>(1)?;
        }
    }
    let next = assign(partitions, &members, &current);
    for (partition, (before, after)) in current.iter().zip(&next).enumerate() {
        if before != after {
            tx.execute(
                "UPDATE annals_group_offsets SET owner = $3, owner_generation = $4 \
                 WHERE group_name = $1 AND partition = $2",
                params![group, partition as u32, after.clone(), generation],
            )
            .await?;
        }
    }
    tx.execute(
        "UPDATE annals_groups SET generation = $2 WHERE group_name = $1",
        params![group, generation],
    )
    .await?;
    tracing::info!(group, generation, members = members.len(), "rebalanced");
    Ok(generation)
}

/// Leaves the group at once, handing the member's partitions to the others.
pub(crate) async fn leave(tx: &mut Tx, group: &str, member: &str, partitions: Partition) -> Result<()> {
    let generation = lock_group(tx, group).await?;
    let left = tx
        .execute(
            "DELETE FROM annals_group_members WHERE group_name = $1 AND member_id = $2",
            params![group, member],
        )
        .await?;
    if left > 0 {
        rebalance(tx, group, generation, partitions).await?;
    }
    Ok(())
}

/// The committed offset of a partition `member` owns since `generation`; `Fenced` if it
/// does not own it (any more).
pub(crate) async fn owned_offset(
    tx: &mut Tx,
    group: &str,
    partition: Partition,
    member: &str,
    generation: i64,
) -> Result<Offset> {
    let row = tx
        .query_opt(
            "SELECT committed FROM annals_group_offsets \
             WHERE group_name = $1 AND partition = $2 AND owner = $3 AND owner_generation = $4",
            params![group, partition, member, generation],
        )
        .await?;
    match row {
        Some(row) => row.get(0),
        None => Err(Error::Fenced {
            group: group.to_owned(),
            partition,
        }),
    }
}

/// Moves the committed offset of `partition` from `from` to `to`, only if `member` still
/// owns it since `generation` and nobody moved it since: otherwise `Fenced`, and the
/// caller's transaction (its read-model writes) must roll back.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn commit(
    tx: &mut Tx,
    group: &str,
    partition: Partition,
    member: &str,
    generation: i64,
    from: Offset,
    to: Offset,
) -> Result<()> {
    let now = now_ms(tx.engine());
    let updated = tx
        .execute(
            &format!(
                "UPDATE annals_group_offsets SET committed = $5, updated_at = {now} \
                 WHERE group_name = $1 AND partition = $2 AND owner = $3 AND owner_generation = $4 \
                   AND committed = $6"
            ),
            params![group, partition, member, generation, to as i64, from as i64],
        )
        .await?;
    if updated == 1 {
        Ok(())
    } else {
        Err(Error::Fenced {
            group: group.to_owned(),
            partition,
        })
    }
}
