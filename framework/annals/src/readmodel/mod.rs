//! SQL read models in the store's own database.
//!
//! A [`Db`] runs transactions on the database that holds the log, so a projection's
//! writes and its consumer group's offset commit can share one transaction (I6). The
//! same code runs on both engines: statements take `$1, $2, …` placeholders and
//! [`Param`]s, and rows come back as [`Value`]s.
//!
//! On SQLite, write transactions run on SQLite's C API on a blocking thread: one writer
//! per open store. The transactions waiting for it are committed together (group
//! commit): each runs under its own savepoint inside one `BEGIN IMMEDIATE` transaction
//! and rolls back alone when it fails, and each caller hears its result once that one
//! commit is done. On PostgreSQL a transaction is an ordinary transaction on the
//! store's pool.
//!
//! ```no_run
//! # async fn demo(store: annals::Store) -> annals::Result<()> {
//! use annals::params;
//! let db = store.read_models()?;
//! let total: i64 = db
//!     .transaction(|tx| Box::pin(async move {
//!         tx.execute("CREATE TABLE IF NOT EXISTS totals (sku TEXT PRIMARY KEY, qty BIGINT NOT NULL)", &[]).await?;
//!         tx.execute(
//!             "INSERT INTO totals (sku, qty) VALUES ($1, $2) \
//!              ON CONFLICT (sku) DO UPDATE SET qty = totals.qty + excluded.qty",
//!             params!["sku-1", 3],
//!         ).await?;
//!         tx.query_one("SELECT qty FROM totals WHERE sku = $1", params!["sku-1"]).await?.get(0)
//!     }))
//!     .await?;
//! # Ok(()) }
//! ```

mod value;

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;

pub use value::{FromValue, Param, Row, Value};

use crate::error::{Error, Result};

/// Builds a `&[Param]` from values of any type that converts into [`Param`].
#[macro_export]
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        &[$($crate::readmodel::Param::from($value)),*]
    };
}

/// The database engine behind a [`Db`], for the rare statement that differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Engine {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// The memory engine: consumer groups run in its transactions, but it has no SQL,
    /// so statements fail with `Unsupported`.
    Memory,
}

/// What an engine gives read models: queries outside a transaction, and transactions.
#[async_trait]
pub(crate) trait Database: Send + Sync {
    fn engine(&self) -> Engine;

    /// One read-only query outside any transaction.
    async fn query(&self, sql: &str, params: Vec<Param>) -> Result<Vec<Row>>;

    /// Runs `work` in one transaction: a write transaction is committed when `work`
    /// returns `Ok` and rolled back otherwise; a read transaction is always rolled
    /// back.
    async fn transaction(&self, work: Work, writes: bool) -> Result<Answer>;
}

/// A transaction's work with its result type erased, so that [`Database`] can be a
/// trait object.
pub(crate) type Work = Box<dyn for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<Answer>> + Send>;

/// The result of a [`Work`].
pub(crate) type Answer = Box<dyn Any + Send>;

/// The statements of one open transaction, as an engine runs them.
#[async_trait]
pub(crate) trait Statements: Send {
    fn engine(&self) -> Engine;
    async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64>;
    async fn execute_many(&mut self, sql: &str, rows: &[&[Param]]) -> Result<u64>;
    async fn query(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Row>>;
    /// The engine's own transaction, for the engine's own work inside it.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// The engine's own transaction, to take back once the work is done.
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

/// Transactions on the store's database.
#[derive(Clone)]
pub struct Db {
    inner: Arc<dyn Database>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("engine", &self.engine()).finish()
    }
}

impl Db {
    pub(crate) fn new(database: Arc<dyn Database>) -> Self {
        Db { inner: database }
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        self.inner.engine()
    }

    /// Runs one read-only query outside any transaction: no write lock on SQLite, no
    /// BEGIN and COMMIT round trips on PostgreSQL.
    pub async fn query(&self, sql: &str, params: Vec<Param>) -> Result<Vec<Row>> {
        self.inner.query(sql, params).await
    }

    /// Runs `work` in one transaction: committed when it returns `Ok`, rolled back
    /// when it returns an error (or panics). `work` must not end the transaction
    /// itself with a `COMMIT` or `ROLLBACK` statement.
    pub async fn transaction<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<T>> + Send + 'static,
    {
        self.run(work, true).await
    }

    /// Runs `work`, which only reads, in one transaction: it sees one consistent state
    /// of the database. On SQLite it neither takes the write lock nor waits for
    /// writers.
    pub async fn read_transaction<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<T>> + Send + 'static,
    {
        self.run(work, false).await
    }

    async fn run<T, F>(&self, work: F, writes: bool) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<T>> + Send + 'static,
    {
        let work: Work = Box::new(move |tx| {
            let done = work(tx);
            Box::pin(async move { done.await.map(|value| Box::new(value) as Answer) })
        });
        let answer = self.inner.transaction(work, writes).await?;
        Ok(*answer
            .downcast::<T>()
            .expect("a transaction answers with its work's result"))
    }
}

/// One open transaction of a [`Db`].
pub struct Tx {
    inner: Box<dyn Statements>,
}

impl Tx {
    pub(crate) fn new(statements: impl Statements + 'static) -> Self {
        Tx {
            inner: Box::new(statements),
        }
    }

    /// The engine's own transaction, taken back.
    pub(crate) fn into_inner<S: Statements + 'static>(self) -> S {
        *self
            .inner
            .into_any()
            .downcast::<S>()
            .expect("an engine runs its own transactions")
    }

    /// The engine's own transaction, if `S` is its type.
    pub(crate) fn engine_tx<S: Statements + 'static>(&mut self) -> Option<&mut S> {
        self.inner.as_any_mut().downcast_mut::<S>()
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        self.inner.engine()
    }

    /// Runs one statement; returns the number of rows it changed.
    pub async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64> {
        self.inner.execute(sql, params).await
    }
    /// Runs one statement once for each row of parameters, in order; returns the number
    /// of rows they changed in all. On SQLite the statement is looked up and prepared
    /// once for the whole batch, which saves most of what a statement costs besides
    /// its own work; on PostgreSQL the rows go one after another on the transaction's
    /// connection. Every row supplies every parameter, as for [`Tx::execute`]. The
    /// first failing row ends it with its error; the rows before it stay written in
    /// the transaction until the error, passed on, rolls the transaction back. No rows
    /// run nothing and change nothing.
    ///
    /// ```no_run
    /// # async fn demo(tx: &mut annals::readmodel::Tx) -> annals::Result<()> {
    /// use annals::readmodel::Param;
    /// let sold = [("sku-1", 2), ("sku-2", 1), ("sku-1", 5)];
    /// let rows: Vec<[Param; 2]> = sold.iter().map(|(sku, qty)| [Param::from(*sku), Param::from(*qty)]).collect();
    /// tx.execute_many(
    ///     "INSERT INTO totals (sku, qty) VALUES ($1, $2) \
    ///      ON CONFLICT (sku) DO UPDATE SET qty = totals.qty + excluded.qty",
    ///     &rows,
    /// )
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub async fn execute_many<R: AsRef<[Param]> + Sync>(&mut self, sql: &str, rows: &[R]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let rows: Vec<&[Param]> = rows.iter().map(AsRef::as_ref).collect();
        self.inner.execute_many(sql, &rows).await
    }

    /// Runs one query; returns its rows.
    pub async fn query(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Row>> {
        self.inner.query(sql, params).await
    }

    /// Runs a query that returns at most one row.
    pub async fn query_opt(&mut self, sql: &str, params: &[Param]) -> Result<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Runs a query that returns exactly one row.
    pub async fn query_one(&mut self, sql: &str, params: &[Param]) -> Result<Row> {
        self.query_opt(sql, params).await?.ok_or(Error::ColumnType {
            index: 0,
            expected: "a row",
            found: "no row",
        })
    }
}
