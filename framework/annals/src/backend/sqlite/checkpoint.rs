//! WAL checkpoints, mostly off the commit path.
//!
//! SQLite checkpoints inside whichever commit makes the WAL cross a number of pages
//! ([`WRITER_AFTER_PAGES`] for the writer's connection), and that checkpoint is also
//! what lets the WAL start over from its beginning (without it, the WAL grows for as
//! long as writes continue). Left alone, that commit copies the whole WAL into the
//! database file while its appenders wait. This thread copies frames in the
//! background (`PASSIVE`: it never blocks the writer or readers) every [`EVERY`], so
//! the writer's own checkpoint finds most of them copied already and is shorter. It
//! checkpoints once more when the store closes.
//!
//! A background checkpoint alone cannot restart the WAL while appends keep coming: the
//! writer adds frames while it copies, so it never finds all of them copied. Only the
//! writer's own checkpoint, which runs between two of its commits, does. Each still
//! costs the appenders of that commit a sync of the database file, so the writer
//! checkpoints a quarter as often as SQLite's default of 1,000 pages would.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::{Error, Result};

/// How often the WAL is folded back into the database file.
const EVERY: Duration = Duration::from_millis(100);

/// The WAL's size, in pages, at which the writer's commit checkpoints it. Just under
/// the 4,096 frames one of SQLite's WAL-index hash tables covers, so a read still
/// looks a page up in a single table. Against SQLite's default of 1,000, W1-warm on
/// eight tasks ran as fast or faster with its p99 latency cut by about two fifths
/// (the measurements are in the book's SQLite chapter, under Checkpoints); the WAL
/// file may grow to about 16 MiB of 4 KiB pages before it starts over.
pub(super) const WRITER_AFTER_PAGES: u32 = 4000;

pub(super) struct Checkpointer {
    stop: Arc<AtomicBool>,
    /// Ends once it has checkpointed for the last time and closed its connection.
    thread: super::Worker,
}

impl Checkpointer {
    pub(super) fn start(path: &Path, busy_timeout: Duration) -> Result<Self> {
        let conn = Connection::open(path).map_err(Error::from)?;
        conn.busy_timeout(busy_timeout).map_err(Error::from)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            super::Worker::spawn("annals-sqlite-checkpoint", move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(EVERY);
                    if let Err(error) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                        tracing::warn!(%error, "WAL checkpoint failed");
                    }
                }
            })?
        };
        Ok(Checkpointer { stop, thread })
    }

    /// Checkpoints once more and stops. Every call waits for that, so one whose future
    /// is dropped is finished by the next.
    pub(super) async fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.unpark();
        self.thread.ended().await;
    }
}

impl Drop for Checkpointer {
    /// A store dropped without closing still stops its checkpoint thread (after one
    /// last checkpoint), as its writer thread stops once its queue is gone.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.unpark();
    }
}
