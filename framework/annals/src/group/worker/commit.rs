//! The fenced writes of a partition's owner, through the engine's groups.

use std::sync::Arc;

use crate::backend::Groups;
use crate::coordination::{DeadLetterStatus, Fence};
use crate::error::Result;
use crate::position::{Offset, Partition};
use crate::readmodel::Tx;
use crate::record::RecordedEvent;
use crate::store::Store;

/// The fenced writes of one partition's owner.
#[derive(Clone)]
pub(super) struct Commit {
    pub(super) store: Store,
    pub(super) group: Arc<str>,
    pub(super) member: Arc<str>,
    pub(super) partition: Partition,
    pub(super) generation: i64,
}

impl Commit {
    pub(super) fn groups(&self) -> Result<&dyn Groups> {
        self.store.groups()
    }

    pub(super) fn fence(&self) -> Fence<'_> {
        Fence {
            group: &self.group,
            partition: self.partition,
            member: &self.member,
            generation: self.generation,
        }
    }

    pub(super) async fn commit(&self, tx: &mut Tx, from: Offset, to: Offset) -> Result<()> {
        self.groups()?.commit(tx, &self.fence(), from, to).await
    }

    pub(super) async fn owned_offset(&self, tx: &mut Tx) -> Result<Offset> {
        self.groups()?.owned_offset(tx, &self.fence()).await
    }

    pub(super) async fn check_owner(&self, tx: &mut Tx) -> Result<()> {
        self.owned_offset(tx).await.map(drop)
    }

    pub(super) async fn dead_letter(
        &self,
        tx: &mut Tx,
        record: &RecordedEvent,
        status: DeadLetterStatus,
        error: &str,
        attempts: u32,
    ) -> Result<()> {
        self.groups()?
            .add_dead_letter(tx, &self.group, record, status, error, attempts)
            .await
    }

    /// The partition's dead letters in offset order: id, offset, stream and status.
    pub(super) async fn dead_letters(&self, tx: &mut Tx) -> Result<Vec<(i64, Offset, String, DeadLetterStatus)>> {
        self.groups()?
            .partition_dead_letters(tx, &self.group, self.partition)
            .await
    }

    pub(super) async fn resolve(&self, tx: &mut Tx, id: i64) -> Result<()> {
        self.groups()?.resolve_dead_letter(tx, &self.group, id).await
    }

    /// Pauses the partition with `reason`, if this member still owns it.
    pub(super) async fn stop(&self, tx: &mut Tx, reason: &str) -> Result<()> {
        self.check_owner(tx).await?;
        self.groups()?.stop(tx, &self.group, self.partition, reason).await
    }
}
