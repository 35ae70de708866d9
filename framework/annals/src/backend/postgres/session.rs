//! A connection that a long-lived task keeps between its statements.
//!
//! sqlx's pool hands out its idle connections oldest first, so a task that takes one
//! for each statement wakes a different server process every time, one whose caches
//! the others have evicted meanwhile. The writers and the notification senders each
//! keep one session instead. A statement that fails on it gives it back (it may be
//! broken), and the next statement takes a fresh one. A session left unused for
//! [`IDLE_LIMIT`], or kept for [`LIFETIME`], goes back to the pool before its next
//! statement, so that the pool's own rules for idle and old connections apply to it
//! as they did when every statement took one.

use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, Postgres};

use crate::error::Result;

/// Unused for this long, a session may have been closed by the server or a proxy in
/// between: the next statement takes a connection from the pool instead.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// The pool's default `max_lifetime`: a session kept this long goes back to the pool,
/// which closes it.
const LIFETIME: Duration = Duration::from_secs(30 * 60);

pub(super) struct Session {
    pool: PgPool,
    conn: Option<Kept>,
}

struct Kept {
    conn: PoolConnection<Postgres>,
    taken: Instant,
    used: Instant,
}

impl Session {
    pub(super) fn new(pool: PgPool) -> Self {
        Session { pool, conn: None }
    }

    /// The kept connection, taken from the pool first if there is none or it has been
    /// idle or kept too long.
    pub(super) async fn conn(&mut self) -> Result<&mut PgConnection> {
        let now = Instant::now();
        let kept = match self.conn.take() {
            Some(kept) if now - kept.used < IDLE_LIMIT && now - kept.taken < LIFETIME => kept,
            _ => Kept {
                conn: self.pool.acquire().await?,
                taken: now,
                used: now,
            },
        };
        let kept = self.conn.insert(kept);
        kept.used = now;
        Ok(&mut *kept.conn)
    }

    /// Gives the connection back after a failed statement.
    pub(super) fn discard(&mut self) {
        self.conn = None;
    }
}
