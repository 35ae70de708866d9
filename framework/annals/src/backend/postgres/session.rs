//! A connection that a long-lived task keeps between its statements.
//!
//! sqlx's pool hands out its idle connections oldest first, so a task that takes one
//! for each statement wakes a different server process every time, one whose caches
//! the others have evicted meanwhile. The writers and the notification senders each
//! keep one session instead. A statement that fails on it gives it back (it may be
//! broken), and the next statement takes a fresh one. Stream reads share one
//! [`Parked`] connection the same way.

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, Postgres};

use crate::error::Result;

pub(super) struct Session {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
}

impl Session {
    pub(super) fn new(pool: PgPool) -> Self {
        Session { pool, conn: None }
    }

    /// The kept connection, taken from the pool first if there is none.
    pub(super) async fn conn(&mut self) -> Result<&mut PgConnection> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(&mut **self.conn.insert(conn))
    }

    /// Gives the connection back after a failed statement.
    pub(super) fn discard(&mut self) {
        self.conn = None;
    }
}

/// One connection parked for the reads a command or a load makes (a stream's events),
/// so that reads one after another run on the same warm session instead of the pool's
/// oldest idle one. A read takes it if it is free, or any connection from the pool,
/// and parks what it used when the slot is empty. Only one is parked, so the pool
/// keeps the rest.
pub(super) struct Parked {
    pool: PgPool,
    slot: std::sync::Mutex<Option<PoolConnection<Postgres>>>,
}

impl Parked {
    pub(super) fn new(pool: PgPool) -> Self {
        Parked {
            pool,
            slot: std::sync::Mutex::new(None),
        }
    }

    /// The parked connection, or one from the pool.
    pub(super) async fn take(&self) -> Result<PoolConnection<Postgres>> {
        let parked = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        match parked {
            Some(conn) => Ok(conn),
            None => Ok(self.pool.acquire().await?),
        }
    }

    /// Gives the parked connection back to the pool (before the pool closes, which
    /// waits for every connection).
    pub(super) fn release(&self) {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Parks `conn` after a read that succeeded, if the slot is empty; otherwise it
    /// goes back to the pool.
    pub(super) fn put(&self, conn: PoolConnection<Postgres>) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(conn);
        }
    }
}
