//! Dead letters coming back: those marked for retry, or parked behind a failure
//! that is gone, handled again stream by stream in offset order.

use std::collections::HashSet;

use super::Member;
use crate::coordination::{DeadLetterStatus, Owned};
use tracing::Instrument;

use crate::error::Result;
use crate::group::handling_span;
use crate::group::Handler;
use crate::record::RecordedEvent;

impl Member {
    /// Handles the partition's dead letters that nothing blocks any more (marked for
    /// retry, or parked with no failed record of their stream before them), stream by
    /// stream in offset order, stopping a stream at its first failure. Returns the streams that
    /// still have dead letters.
    pub(super) async fn retry_dead_letters(&self, owned: Owned) -> Result<HashSet<String>> {
        if matches!(self.handler, Handler::Batch(_)) {
            return Ok(HashSet::new());
        }
        let commit = self.commit_info(owned);
        let rows = self
            .db
            .read_transaction(move |tx| Box::pin(async move { commit.dead_letters(tx).await }))
            .await?;
        let mut blocked: HashSet<String> = HashSet::new();
        for (id, offset, stream, status) in rows {
            if blocked.contains(&stream) {
                continue;
            }
            // A failed record blocks its stream; a parked or retried one with no failed
            // record before it is handled now.
            if status == DeadLetterStatus::Failed {
                blocked.insert(stream);
                continue;
            }
            let record = self
                .store
                .read_partition(owned.partition, offset, 1)
                .await?
                .into_iter()
                .next();
            let Some(record) = record.filter(|r| r.offset == offset) else {
                continue;
            };
            if self.retry_one(owned, id, &record).await? {
                continue;
            }
            blocked.insert(stream.clone());
            let commit = self.commit_info(owned);
            self.db
                .transaction(move |tx| {
                    Box::pin(async move {
                        commit.check_owner(tx).await?;
                        commit.groups()?.park_behind(tx, &commit.group, &stream, offset).await
                    })
                })
                .await?;
        }
        Ok(blocked)
    }

    /// One retried dead letter: handled and removed (`true`), or back to failed.
    async fn retry_one(&self, owned: Owned, id: i64, record: &RecordedEvent) -> Result<bool> {
        let failed = self
            .with_retries(|| async {
                let commit = self.commit_info(owned);
                match &self.handler {
                    Handler::Transactional(projection) => {
                        let (projection, record) = (projection.clone(), record.clone());
                        let span = handling_span(Some(&self.group), &record);
                        self.db
                            .transaction(move |tx| {
                                Box::pin(async move {
                                    commit.check_owner(tx).await?;
                                    projection.handle(&record, tx).instrument(span).await?;
                                    commit.resolve(tx, id).await
                                })
                            })
                            .await
                    }
                    Handler::AtLeastOnce(consumer, processed) => match consumer
                        .handle(record, processed)
                        .instrument(handling_span(Some(&self.group), record))
                        .await
                    {
                        Ok(()) => {
                            self.db
                                .transaction(move |tx| {
                                    Box::pin(async move {
                                        commit.check_owner(tx).await?;
                                        commit.resolve(tx, id).await
                                    })
                                })
                                .await
                        }
                        Err(error) => Err(error),
                    },
                    // A batch consumer's records are never dead-lettered (see `retry_dead_letters`).
                    Handler::Batch(consumer) => {
                        consumer
                            .handle_batch(owned.partition, std::slice::from_ref(record))
                            .await
                    }
                }
            })
            .await?;
        let Some(last_error) = failed else { return Ok(true) };
        let (commit, attempts) = (self.commit_info(owned), self.options.max_attempts.max(1));
        self.db
            .transaction(move |tx| {
                Box::pin(async move {
                    commit.check_owner(tx).await?;
                    commit
                        .groups()?
                        .fail_dead_letter(tx, &commit.group, id, &last_error, attempts)
                        .await
                })
            })
            .await?;
        Ok(false)
    }
}
