//! Cross-process wake-ups over `LISTEN/NOTIFY`: new records, and group commits.
//!
//! A `NOTIFY` inside an append's transaction would serialise every commit in the
//! database behind PostgreSQL's notification queue lock, defeating group commit. So
//! writers wake in-process subscribers directly, and hand the new high watermarks to
//! [`send`], which coalesces them into one asynchronous-commit `pg_notify` at a time,
//! at most one per [`MIN_GAP`].
//! Notifications are hints: subscribers re-read the log on every wake-up and poll
//! slowly in case one is lost.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::session::Session;
use crate::backend::Wakeups;
use crate::coordination::Commits;
use crate::error::Error;
use crate::position::{Offset, Partition};

/// PostgreSQL refuses payloads of 8,000 bytes or more.
const MAX_PAYLOAD: usize = 7_000;

/// How long the listener waits before it tries to connect again.
const RETRY: Duration = Duration::from_secs(1);

/// The least time between two notifications on one channel. A notification is a
/// transaction of its own, and every listening session is woken for it: sent after
/// every batch, they cost a busy store about 15 % of its appends. What is published
/// within the gap goes out together, so remote subscribers hear of new records at
/// most this much later than they would otherwise.
const MIN_GAP: Duration = Duration::from_millis(5);

/// What waits to be announced on one channel: new high watermarks (by partition) or
/// group commits (by group and partition), the newest offset of each.
#[derive(Default)]
pub(super) struct Notifier {
    pending: Mutex<BTreeMap<(String, Partition), Offset>>,
    wake: Notify,
    closed: AtomicBool,
}

impl Notifier {
    /// `partition` now holds offsets below `next_offset`.
    pub(super) fn publish(&self, partition: Partition, next_offset: Offset) {
        self.note(String::new(), partition, next_offset);
    }

    /// `group` committed `partition` up to `committed`.
    pub(super) fn publish_commit(&self, group: &str, partition: Partition, committed: Offset) {
        self.note(group.to_owned(), partition, committed);
    }

    fn note(&self, group: String, partition: Partition, offset: Offset) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let known = pending.entry((group, partition)).or_default();
        *known = (*known).max(offset);
        drop(pending);
        self.wake.notify_one();
    }

    /// Has the sender announce what is pending at once, then stop.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn take(&self) -> BTreeMap<(String, Partition), Offset> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Announces what is pending, outside any other transaction, with an asynchronous
/// commit, on a session of its own and at most once per [`MIN_GAP`], coalesced into as
/// few notifications as fit: watermarks as
/// `partition:next_offset` pairs separated by spaces, group commits as
/// `group<TAB>partition<TAB>committed` lines. Once the notifier closes it announces
/// what is pending then at once, closes its connection and stops.
pub(super) async fn send(pool: PgPool, channel: String, notifier: Arc<Notifier>) {
    let mut session = Session::new(pool);
    let mut next = Instant::now();
    loop {
        notifier.wake.notified().await;
        if notifier.closed.load(Ordering::Acquire) {
            announce(&mut session, &channel, &notifier.take()).await;
            session.close().await;
            return;
        }
        tokio::time::sleep_until(next).await;
        // A wake-up for what the last notification already carried finds nothing.
        let pending = notifier.take();
        if !pending.is_empty() {
            next = Instant::now() + MIN_GAP;
            announce(&mut session, &channel, &pending).await;
        }
    }
}

/// Sends `pending` on `channel` in as few notifications as fit.
async fn announce(session: &mut Session, channel: &str, pending: &BTreeMap<(String, Partition), Offset>) {
    for payload in payloads(pending) {
        // Losing a notification only delays remote readers until their next poll.
        let sent = async {
            let conn = session.conn().await?;
            sqlx::query(include_str!("sql/notify.sql"))
                .bind(channel)
                .bind(&payload)
                .execute(conn)
                .await?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(error) = sent {
            session.discard();
            tracing::debug!(%error, "pg_notify failed");
        }
    }
}

fn payloads(pending: &BTreeMap<(String, Partition), Offset>) -> Vec<String> {
    let mut payloads = vec![String::new()];
    for ((group, partition), offset) in pending {
        let current = payloads.last_mut().expect("never empty");
        if current.len() > MAX_PAYLOAD {
            payloads.push(String::new());
        }
        let current = payloads.last_mut().expect("never empty");
        let _ = if group.is_empty() {
            write!(
                current,
                "{}{partition}:{offset}",
                if current.is_empty() { "" } else { " " }
            )
        } else {
            write!(
                current,
                "{}{group}\t{partition}\t{offset}",
                if current.is_empty() { "" } else { "\n" }
            )
        };
    }
    payloads.retain(|payload| !payload.is_empty());
    payloads
}

/// Turns notifications on the store's channels into wake-ups, reconnecting as needed:
/// on the first, new high watermarks (`partition:next_offset` pairs); on the second,
/// group commits (`group`, partition and committed offset, separated by tabs). Stops
/// when the pool closes, whatever it is waiting for then (a notification, a
/// connection, the pause before the next attempt).
pub(super) async fn listen(
    pool: PgPool,
    [log, commits_channel]: [String; 2],
    wakeups: Arc<Wakeups>,
    commits: Arc<Commits>,
) {
    loop {
        let connected = until_closed(&pool, async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen_all([log.as_str(), commits_channel.as_str()]).await?;
            Ok(listener)
        })
        .await;
        let mut listener = match connected {
            Ok(listener) => listener,
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                tracing::debug!(%error, "cannot LISTEN yet");
                let pause = async {
                    tokio::time::sleep(RETRY).await;
                    Ok(())
                };
                if until_closed(&pool, pause).await.is_err() {
                    return;
                }
                continue;
            }
        };
        loop {
            match until_closed(&pool, listener.recv()).await {
                Ok(notification) if notification.channel() == commits_channel => {
                    for line in notification.payload().lines() {
                        let mut fields = line.split('\t');
                        if let (Some(group), Some(partition), Some(offset)) =
                            (fields.next(), fields.next(), fields.next())
                        {
                            if let (Ok(partition), Ok(offset)) = (partition.parse(), offset.parse()) {
                                commits.heard(group, partition, offset);
                            }
                        }
                    }
                }
                Ok(notification) => {
                    for pair in notification.payload().split(' ') {
                        if let Some((partition, offset)) = pair.split_once(':') {
                            if let (Ok(partition), Ok(offset)) = (partition.parse(), offset.parse()) {
                                wakeups.publish(partition, offset);
                            }
                        }
                    }
                }
                // The store is closing: the listener's connection, dropped once the
                // pool is marked closed, is closed rather than kept.
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => {
                    tracing::debug!(%error, "LISTEN connection lost");
                    break;
                }
            }
        }
    }
}

/// What `future` gives, or `Error::PoolClosed` as soon as the pool closes.
async fn until_closed<T>(
    pool: &PgPool,
    future: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    pool.close_event().do_until(future).await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_under_the_limit() {
        let many: BTreeMap<(String, Partition), Offset> = Partition::all(5_000)
            .map(|p| ((String::new(), p), Offset(u64::MAX)))
            .collect();
        let split = payloads(&many);
        assert!(split.len() > 1);
        assert!(split.iter().all(|p| p.len() < 8_000));
        let pairs: usize = split.iter().map(|p| p.split(' ').count()).sum();
        assert_eq!(pairs, 5_000);
        assert!(payloads(&BTreeMap::new()).is_empty());
    }
}
