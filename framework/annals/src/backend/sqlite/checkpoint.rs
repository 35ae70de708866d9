//! WAL checkpoints, mostly off the commit path.
//!
//! SQLite checkpoints inside whichever commit makes the WAL cross 1,000 pages, and
//! that checkpoint is also what lets the WAL start over from its beginning (without
//! it, the WAL grows for as long as writes continue). Left alone, that commit copies
//! the whole WAL into the database file while its appenders wait. This thread copies
//! frames in the background (`PASSIVE`: it never blocks the writer or readers) every
//! [`EVERY`], so the writer's own checkpoint finds almost everything copied already
//! and is short. It checkpoints once more when the store closes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::error::{Error, Result};

/// How often the WAL is folded back into the database file.
const EVERY: Duration = Duration::from_millis(100);

pub(super) struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    pub(super) fn start(path: &Path, busy_timeout: Duration) -> Result<Self> {
        let conn = Connection::open(path).map_err(Error::from)?;
        conn.busy_timeout(busy_timeout).map_err(Error::from)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("annals-sqlite-checkpoint".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(EVERY);
                        if let Err(error) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                            tracing::warn!(%error, "WAL checkpoint failed");
                        }
                    }
                })
                .map_err(Error::Io)?
        };
        Ok(Checkpointer { stop, thread })
    }

    /// Checkpoints once more and stops.
    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}
