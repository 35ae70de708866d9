//! WAL checkpoints off the commit path.
//!
//! Left to itself, SQLite checkpoints inside whichever commit makes the WAL cross 1,000
//! pages, so every few dozen batches one append waits for the database file to be
//! written and synced. The writer turns that off; this thread checkpoints instead
//! (`PASSIVE`: it never blocks the writer or readers), every [`EVERY`] while the store
//! is open, and once more when it closes.

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
        let conn = Connection::open(path).map_err(Error::Sqlite)?;
        conn.busy_timeout(busy_timeout).map_err(Error::Sqlite)?;
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
                .map_err(|error| Error::InvalidUrl {
                    url: path.display().to_string(),
                    reason: format!("cannot start the checkpoint thread: {error}"),
                })?
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
