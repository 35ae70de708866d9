//! Rebuilding a view: replay the log into fresh tables while the old ones keep serving,
//! then swap them in, in one transaction with the group's offsets.

use std::time::Duration;

use super::{admin, GroupMember, GroupOptions, Projection, StartAt};
use crate::coordination::validate_group;
use crate::error::Result;
use crate::position::{Offset, Partition};
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
) -> Result<Vec<(Partition, Offset)>> {
    validate_group(group)?;
    let shadow = format!("{group}.rebuild");
    validate_group(&shadow)?;
    let db = store.groups()?.db();
    admin::describe(store, group).await?;
    store.groups()?.forget(&shadow).await?;

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

    let (main, replay, groups) = (group.to_owned(), shadow.clone(), store.clone());
    db.transaction(move |tx| {
        Box::pin(async move {
            // The swap first: on PostgreSQL it waits for members' transactions on the
            // old tables to finish, before this transaction holds any group row.
            for statement in &swap {
                tx.execute(statement, &[]).await?;
            }
            groups.groups()?.take_over(tx, &main, &replay).await
        })
    })
    .await
}
