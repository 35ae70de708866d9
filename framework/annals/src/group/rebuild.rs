//! Rebuilding a view: replay the log into fresh tables while the old ones keep serving,
//! then swap them in, in one transaction with the group's offsets.

use std::time::Duration;

use super::coordinator::validate_group;
use super::{admin, GroupMember, GroupOptions, Projection, StartAt};
use crate::error::{Error, Result};
use crate::params;
use crate::position::Partition;
use crate::readmodel::Engine;
use crate::store::Store;

/// Replays `group`'s read model from offset 0 into fresh tables, then swaps them in.
///
/// `fresh` is the projection writing to the new tables (its `setup` creates them). It
/// runs as the shadow group `GROUP.rebuild` until it has caught up with the log, while
/// `group`'s members keep serving (and updating) the old tables. Then one transaction
/// runs `swap` (for example `DROP TABLE totals` and `ALTER TABLE totals_next RENAME TO
/// totals`), moves `group`'s committed offsets to where the replay stopped and hands it
/// the replay's dead letters. Running members of `group` find their next commit fenced
/// and resume from those offsets, on the new tables.
///
/// Returns the offsets the replay stopped at, per partition.
pub async fn rebuild(
    store: &Store,
    group: &str,
    fresh: impl Projection,
    swap: Vec<String>,
    options: GroupOptions,
) -> Result<Vec<(Partition, u64)>> {
    validate_group(group)?;
    let shadow = format!("{group}.rebuild");
    validate_group(&shadow)?;
    let db = store.read_models()?;
    admin::describe(store, group).await?;
    forget(store, &shadow).await?;

    // A replay starts at the first record, whatever the options say.
    let options = GroupOptions {
        start_at: StartAt::Earliest,
        ..options
    };
    let member = GroupMember::projection(store, &shadow, fresh, options).await?;
    loop {
        if admin::describe(store, &shadow).await?.lag == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    member.shutdown().await?;

    let (main, replay) = (group.to_owned(), shadow.clone());
    db.transaction(move |tx| {
        Box::pin(async move {
            // The swap first: on PostgreSQL it waits for members' transactions on the
            // old tables to finish, before this transaction holds any group row.
            for statement in &swap {
                tx.execute(statement, &[]).await?;
            }
            let lock = if tx.engine() == Engine::Postgres {
                " FOR UPDATE"
            } else {
                ""
            };
            tx.query_opt(
                &format!("SELECT generation FROM annals_groups WHERE group_name = $1{lock}"),
                params![&main],
            )
            .await?
            .ok_or_else(|| Error::GroupNotFound { group: main.clone() })?;
            let offsets: Vec<(Partition, u64)> = tx
                .query(
                    "SELECT partition, committed FROM annals_group_offsets WHERE group_name = $1 ORDER BY partition",
                    params![&replay],
                )
                .await?
                .iter()
                .map(|row| Ok((row.get(0)?, row.get(1)?)))
                .collect::<Result<_>>()?;
            for (partition, committed) in &offsets {
                tx.execute(
                    "UPDATE annals_group_offsets SET committed = $3 WHERE group_name = $1 AND partition = $2",
                    params![&main, *partition, *committed as i64],
                )
                .await?;
            }
            tx.execute("DELETE FROM annals_dead_letters WHERE group_name = $1", params![&main])
                .await?;
            tx.execute(
                "UPDATE annals_dead_letters SET group_name = $1 WHERE group_name = $2",
                params![&main, &replay],
            )
            .await?;
            for table in ["annals_group_offsets", "annals_group_members", "annals_groups"] {
                tx.execute(&format!("DELETE FROM {table} WHERE group_name = $1"), params![&replay])
                    .await?;
            }
            Ok(offsets)
        })
    })
    .await
}

/// Removes what an earlier, interrupted rebuild left of the shadow group.
async fn forget(store: &Store, shadow: &str) -> Result<()> {
    let shadow = shadow.to_owned();
    store
        .read_models()?
        .transaction(move |tx| {
            Box::pin(async move {
                for table in [
                    "annals_dead_letters",
                    "annals_group_offsets",
                    "annals_group_members",
                    "annals_groups",
                ] {
                    tx.execute(&format!("DELETE FROM {table} WHERE group_name = $1"), params![&shadow])
                        .await?;
                }
                Ok(())
            })
        })
        .await
}
