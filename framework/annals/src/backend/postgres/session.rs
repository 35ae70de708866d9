//! A connection that a long-lived task keeps between its statements.
//!
//! sqlx's pool hands out its idle connections oldest first, so a task that takes one
//! for each statement wakes a different server process every time, one whose caches
//! the others have evicted meanwhile. The writers and the notification senders each
//! keep one session instead. A statement that fails on it gives it back (it may be
//! broken), and the next statement takes a fresh one.

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
