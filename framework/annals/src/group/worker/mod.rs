//! A member at work: the heartbeat loop that follows the assignment (here), one task
//! per owned partition that fetches batches, hands them to the handler and commits
//! ([`partition`]), the retries of dead letters ([`dead_letters`]), and the fenced
//! writes both make ([`commit`]).

mod commit;
mod dead_letters;
mod partition;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use super::{GroupOptions, Handler};
use crate::coordination::{Joining, Membership, Owned};
use crate::error::{Error, Result};
use crate::position::Partition;
use crate::readmodel::Db;
use crate::store::Store;

pub(super) struct Member {
    pub(super) store: Store,
    pub(super) db: Db,
    pub(super) group: Arc<str>,
    pub(super) member_id: String,
    pub(super) host: String,
    pub(super) handler: Handler,
    pub(super) options: GroupOptions,
}

struct Running {
    generation: i64,
    stop: watch::Sender<bool>,
    retry: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Member {
    pub(super) async fn heartbeat(&self) -> Result<Membership> {
        let (group, member, host) = (self.group.clone(), self.member_id.clone(), self.host.clone());
        let timeout = i64::try_from(self.options.session_timeout.as_millis()).unwrap_or(i64::MAX);
        let (partitions, start_at) = (self.store.partition_count(), self.options.start_at);
        let (mode, store) = (self.handler.commit_mode(), self.store.clone());
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    let joining = Joining {
                        group: &group,
                        member: &member,
                        host: &host,
                        session_timeout_ms: timeout,
                        start_at,
                        mode,
                    };
                    store.groups()?.heartbeat(tx, &joining, partitions).await
                })
            })
            .await
    }

    async fn leave(&self) -> Result<()> {
        let (group, member) = (self.group.clone(), self.member_id.clone());
        let (partitions, store) = (self.store.partition_count(), self.store.clone());
        self.db
            .transaction(move |tx| {
                Box::pin(async move { store.groups()?.leave(tx, &group, &member, partitions).await })
            })
            .await
    }

    pub(super) async fn run(
        self,
        mut membership: Membership,
        mut stop: watch::Receiver<bool>,
        assigned: watch::Sender<Vec<Partition>>,
    ) -> Result<()> {
        let me = Arc::new(self);
        let mut running: BTreeMap<Partition, Running> = BTreeMap::new();
        let (exits, mut exited) = mpsc::unbounded_channel::<Partition>();
        let mut last_heartbeat = tokio::time::Instant::now();
        loop {
            let wanted: HashMap<Partition, i64> = membership
                .owned
                .iter()
                .filter(|owned| !owned.paused)
                .map(|owned| (owned.partition, owned.generation))
                .collect();
            running.retain(|partition, worker| {
                if wanted.get(partition) != Some(&worker.generation) {
                    let _ = worker.stop.send(true);
                }
                // A worker told to stop keeps its place until it has finished the batch
                // in hand (its exit wakes this loop), so that two workers of this member
                // never work on one partition at once.
                !worker.task.is_finished()
            });
            for owned in membership.owned.iter().filter(|owned| !owned.paused) {
                running
                    .entry(owned.partition)
                    .or_insert_with(|| me.spawn(*owned, exits.clone()));
            }
            for partition in &membership.retries {
                if let Some(worker) = running.get(partition) {
                    worker.retry.notify_one();
                }
            }
            let now: Vec<Partition> = running
                .iter()
                .filter(|(partition, worker)| wanted.get(partition) == Some(&worker.generation))
                .map(|(partition, _)| *partition)
                .collect();
            assigned.send_if_modified(|current| {
                let changed = *current != now;
                *current = now;
                changed
            });

            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(me.options.heartbeat_interval) => {}
                Some(partition) = exited.recv() => {
                    // A partition stopped (fenced, paused, or failing): ask where things stand.
                    if running.get(&partition).is_some_and(|worker| worker.task.is_finished()) {
                        running.remove(&partition);
                    }
                    tokio::time::sleep(me.options.retry_backoff).await;
                }
            }
            match me.heartbeat().await {
                Ok(next) => {
                    membership = next;
                    last_heartbeat = tokio::time::Instant::now();
                }
                Err(error) => {
                    tracing::warn!(group = %me.group, %error, "heartbeat failed");
                    if last_heartbeat.elapsed() >= me.options.session_timeout {
                        // The group has removed this member by now, and its partitions
                        // are others': stop working on them until a heartbeat gets through.
                        membership.owned.clear();
                    }
                }
            }
        }
        for worker in running.values() {
            let _ = worker.stop.send(true);
        }
        for (_, worker) in running {
            let _ = worker.task.await;
        }
        assigned.send_replace(Vec::new());
        me.leave().await
    }

    fn spawn(self: &Arc<Self>, owned: Owned, exits: mpsc::UnboundedSender<Partition>) -> Running {
        let (stop, stopped) = watch::channel(false);
        let retry = Arc::new(Notify::new());
        let (me, wake) = (self.clone(), retry.clone());
        let task = tokio::spawn(async move {
            let partition = owned.partition;
            match me.work(owned, stopped, wake).await {
                Ok(()) => {}
                Err(error @ Error::Fenced { .. }) => tracing::info!(group = %me.group, %error, "partition lost"),
                Err(error) => tracing::warn!(group = %me.group, %partition, %error, "partition worker failed"),
            }
            let _ = exits.send(partition);
        });
        Running {
            generation: owned.generation,
            stop,
            retry,
            task,
        }
    }
}
