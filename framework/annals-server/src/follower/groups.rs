//! Consumer groups across a failover, as Kafka users expect from `__consumer_offsets`:
//! a follower copies its leader's at-least-once groups (committed offsets and dead
//! letters) every few seconds, so that once promoted their consumers resume about
//! where they were, not from offset 0. Projection groups are not copied: their read
//! models live in the leader's database, so on a promoted store they start from
//! offset 0 and build their tables anew. See [`annals::group::admin::mirror`].

use std::sync::Arc;
use std::time::Duration;

use annals::group::admin;
use annals::group::CommitMode;
use annals::Store;
use annals_client::Client;
use tokio::sync::watch;

use super::leader::Leader;
use super::status::Tracker;
use super::{periodically, FollowError};

/// How often the groups are copied: a consumer that resumes on a promoted store
/// handles again at most what its group committed in this long before the failover.
pub(super) const EVERY: Duration = Duration::from_secs(2);

/// Copies the leader's at-least-once groups into `store` every [`EVERY`] until a stop
/// is asked for, or until it is clear that one side keeps no groups (a `memory:`
/// store). A failure is retried at the next turn; it never stops the follower.
pub(super) async fn copy(
    store: Store,
    leader: Leader,
    client: Client,
    tracker: Arc<Tracker>,
    stopped: watch::Receiver<bool>,
) {
    let what = "copying the leader's consumer groups";
    periodically(EVERY, what, &tracker, stopped, || copy_once(&store, &leader, &client)).await;
}

/// One copy; `false` when there is nothing to copy, ever.
async fn copy_once(store: &Store, leader: &Leader, client: &Client) -> Result<bool, FollowError> {
    let Some(groups) = leader.groups(client).await? else {
        return Ok(false);
    };
    for summary in groups {
        if summary.commit_mode != Some(CommitMode::AtLeastOnce) {
            continue;
        }
        let (group, letters) = leader.group(client, &summary.group).await?;
        match admin::mirror(store, &leader.url, &group, &letters).await {
            Err(annals::Error::Unsupported { .. }) => return Ok(false),
            copied => copied?,
        };
    }
    Ok(true)
}
