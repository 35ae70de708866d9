//! Connections that long-lived tasks and reads keep between their statements.
//!
//! sqlx's pool hands out its idle connections oldest first, so a task that takes one
//! for each statement wakes a different server process every time, one whose caches
//! the others have evicted meanwhile. And a connection given back to the pool is
//! pinged before it is idle again: one more round trip to the server, and one more
//! wake-up of its process, for every statement. The writers and the notification
//! senders each keep one [`Session`] instead; folds take connections from [`Kept`],
//! which holds a few of them between reads. A statement that fails on a kept
//! connection gives it back to the pool (it may be broken), and the next statement
//! takes a fresh one. A connection left unused for [`IDLE_LIMIT`], or kept for
//! [`LIFETIME`], goes back to the pool before its next statement, so that the pool's
//! own rules for idle and old connections apply to it as they did when every statement
//! took one.

use std::sync::Mutex;
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
    conn: Option<Connection>,
}

/// A connection taken from the pool, and when.
pub(super) struct Connection {
    conn: PoolConnection<Postgres>,
    taken: Instant,
    used: Instant,
}

impl Connection {
    async fn acquire(pool: &PgPool, now: Instant) -> Result<Self> {
        Ok(Connection {
            conn: pool.acquire().await?,
            taken: now,
            used: now,
        })
    }

    /// Whether the connection may serve one more statement: used recently enough that
    /// the server or a proxy has not closed it meanwhile, and not kept too long.
    fn fresh(&self, now: Instant) -> bool {
        now - self.used < IDLE_LIMIT && now - self.taken < LIFETIME
    }

    pub(super) fn conn(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// The connection, to be closed rather than given back to the pool when dropped.
    fn closing(mut self) -> Self {
        self.conn.close_on_drop();
        self
    }

    /// Closes the connection now, telling the server; a failure means it is gone anyway.
    async fn close(self) {
        let _ = self.conn.close().await;
    }
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
            Some(kept) if kept.fresh(now) => kept,
            stale => {
                drop(stale.map(Connection::closing));
                Connection::acquire(&self.pool, now).await?
            }
        };
        let kept = self.conn.insert(kept);
        kept.used = now;
        Ok(&mut *kept.conn)
    }

    /// Lets the connection go after a failed statement (it may be in the middle of an
    /// exchange); the next statement takes another.
    pub(super) fn discard(&mut self) {
        drop(self.conn.take().map(Connection::closing));
    }

    /// Closes the connection, as the store closes.
    pub(super) async fn close(&mut self) {
        if let Some(kept) = self.conn.take() {
            kept.close().await;
        }
    }
}

/// A session closes the connection it lets go instead of giving it back to the pool:
/// sqlx pings a connection given back before it is idle again, and one given back while
/// the pool closes (a writer or sender stopped as the store closes) can be left open in
/// the closed pool until the pool is dropped.
impl Drop for Session {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Connections that reads keep between their statements, at most a few: one that a
/// read has finished with waits here for the next read rather than go back to the
/// pool, which would ping it first. Kept connections are taken from the pool, so no
/// more are kept than it can spare.
pub(super) struct Kept {
    pool: PgPool,
    /// `None` once the store closes: from then on every connection is closed when its
    /// read finishes.
    idle: Mutex<Option<Vec<Connection>>>,
    most: usize,
}

impl Kept {
    /// Keeps at most `most` idle connections of `pool`.
    pub(super) fn new(pool: PgPool, most: usize) -> Self {
        Kept {
            pool,
            idle: Mutex::new(Some(Vec::new())),
            most,
        }
    }

    /// The connection kept last, or one from the pool when none is kept. A stale one
    /// goes back to the pool.
    pub(super) async fn take(&self) -> Result<Connection> {
        let now = Instant::now();
        loop {
            let Some(mut kept) = self.lock().as_mut().and_then(Vec::pop) else {
                return Connection::acquire(&self.pool, now).await;
            };
            if kept.fresh(now) {
                kept.used = now;
                return Ok(kept);
            }
        }
    }

    /// Keeps `conn`, whose statements have all run to their end, for the next read;
    /// beyond the bound it goes back to the pool, and once closed it is closed.
    pub(super) fn give_back(&self, conn: Connection) {
        let mut idle = self.lock();
        match idle.as_mut() {
            Some(idle) if idle.len() < self.most => idle.push(conn),
            // Beyond the bound: back to the pool.
            Some(_) => drop(conn),
            None => drop(conn.closing()),
        }
    }

    /// Closes every kept connection, and from now on those of reads still running as
    /// they finish.
    pub(super) async fn close(&self) {
        let kept = self.lock().take().unwrap_or_default();
        for kept in kept {
            kept.close().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<Connection>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}
