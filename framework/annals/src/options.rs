//! How to open a store: a URL names the engine and place, chained setters tune the
//! rest; [`StoreOptions::open`] opens it.
//!
//! | URL | engine |
//! |---|---|
//! | `memory:` | in-process, nothing persisted (tests, docs) |
//! | `sqlite://path/to/file.db[?synchronous=full\|normal\|extra]` | embedded SQLite, WAL |
//! | `postgres://user:pass@host:port/db[?…]` | PostgreSQL (sqlx connection parameters) |

use std::time::Duration;

use crate::error::{Error, Result};

/// The partition count of a store created without an explicit one.
pub const DEFAULT_PARTITIONS: u32 = 16;

/// How long, by default, a SQLite write transaction may await something other than its
/// statements (see [`StoreOptions::transaction_await_limit`]).
pub const DEFAULT_TRANSACTION_AWAIT_LIMIT: Duration = Duration::from_millis(50);

/// How long, by default, a process seals with a subject's key before asking the key
/// store again (see [`StoreOptions::key_cache_ttl`]).
pub const DEFAULT_KEY_CACHE_TTL: Duration = Duration::from_secs(1);

/// Size limits every append is checked against before it reaches the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one event, in bytes (default 1 MiB).
    pub max_event_bytes: usize,
    /// Most events in one append (default 1,000).
    pub max_events_per_append: usize,
    /// Largest append, payloads and metadata together, in bytes (default 4 MiB).
    pub max_append_bytes: usize,
    /// The nesting of arrays and objects a payload or metadata must stay below
    /// (default 128, `serde_json`'s recursion limit: it reads at most 127 levels, so a
    /// deeper event could be stored but not decoded by consumers).
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 1 << 20,
            max_events_per_append: 1_000,
            max_append_bytes: 4 << 20,
            max_json_depth: 128,
        }
    }
}

/// SQLite's `synchronous` setting: how hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Acknowledged appends survive a crash of the process but may be lost with the
    /// machine (power loss).
    Normal,
    /// Every commit is synced to disk: acknowledged appends survive power loss (default).
    #[default]
    Full,
    /// As `Full`, and the directory is synced too.
    Extra,
}

impl Synchronous {
    /// The value of SQLite's `PRAGMA synchronous`: `NORMAL`, `FULL` or `EXTRA`.
    pub fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

impl std::str::FromStr for Synchronous {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "normal" => Ok(Synchronous::Normal),
            "full" => Ok(Synchronous::Full),
            "extra" => Ok(Synchronous::Extra),
            other => Err(format!("synchronous must be normal, full or extra, not {other:?}")),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Location {
    Memory,
    #[cfg(feature = "sqlite")]
    Sqlite(std::path::PathBuf),
    #[cfg(feature = "postgres")]
    Postgres(String),
}

/// How to open a store: parsed from a URL, then adjusted with setters.
///
/// ```
/// use annals::{StoreOptions, Synchronous};
///
/// let options = StoreOptions::from_url("sqlite://orders.db?synchronous=normal")?
///     .partitions(32);
/// assert_eq!(options.synchronous_setting(), Synchronous::Normal);
/// # Ok::<(), annals::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub(crate) location: Location,
    pub(crate) partitions: Option<u32>,
    pub(crate) limits: Limits,
    pub(crate) synchronous: Synchronous,
    pub(crate) max_connections: u32,
    pub(crate) writers: usize,
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) busy_timeout: Duration,
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) transaction_await_limit: Duration,
    pub(crate) poll_interval: Option<Duration>,
    pub(crate) create_if_missing: bool,
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) redacted_url: String,
    pub(crate) keys: Option<String>,
    pub(crate) key_cache_ttl: Duration,
}

impl StoreOptions {
    /// Parses a store URL (see the module docs for the forms).
    pub fn from_url(url: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(unused_mut))]
        let mut options = StoreOptions {
            location: Location::Memory,
            partitions: None,
            limits: Limits::default(),
            synchronous: Synchronous::Full,
            max_connections: 10,
            writers: 1,
            busy_timeout: Duration::from_secs(10),
            transaction_await_limit: DEFAULT_TRANSACTION_AWAIT_LIMIT,
            poll_interval: None,
            create_if_missing: true,
            redacted_url: redact(url),
            keys: None,
            key_cache_ttl: DEFAULT_KEY_CACHE_TTL,
        };
        if url == "memory:" || url == "memory://" {
            return Ok(options);
        }
        if let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            #[cfg(feature = "sqlite")]
            {
                let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
                if path.is_empty() {
                    return Err(invalid("the SQLite URL names no file"));
                }
                for pair in query.split('&').filter(|pair| !pair.is_empty()) {
                    match pair.split_once('=') {
                        Some(("synchronous", value)) => {
                            options.synchronous = value.parse().map_err(|reason: String| invalid(&reason))?;
                        }
                        _ => return Err(invalid(&format!("unknown SQLite parameter {pair:?}"))),
                    }
                }
                options.location = Location::Sqlite(path.into());
                return Ok(options);
            }
            #[cfg(not(feature = "sqlite"))]
            {
                let _ = rest;
                return Err(invalid("this build of annals has no SQLite support"));
            }
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            #[cfg(feature = "postgres")]
            {
                options.location = Location::Postgres(url.to_owned());
                return Ok(options);
            }
            #[cfg(not(feature = "postgres"))]
            return Err(invalid("this build of annals has no PostgreSQL support"));
        }
        Err(invalid("expected memory:, sqlite://path or postgres://…"))
    }

    /// The partition count to create the store with. Opening an existing store with
    /// another count fails with [`Error::PartitionCountMismatch`]; without this setter
    /// an existing store keeps its count and a new one gets [`DEFAULT_PARTITIONS`].
    pub fn partitions(mut self, count: u32) -> Self {
        self.partitions = Some(count);
        self
    }

    /// Whether opening creates the store when there is none (default true). With
    /// `false`, a missing SQLite file or a PostgreSQL database without the annals
    /// tables fails with [`Error::StoreNotFound`] and nothing is created.
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// Size limits for appends.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// SQLite durability (default [`Synchronous::Full`]); ignored by other engines.
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// The SQLite durability that will be used.
    pub fn synchronous_setting(&self) -> Synchronous {
        self.synchronous
    }

    /// Most connections the store keeps open (PostgreSQL pool; SQLite readers). On
    /// PostgreSQL at least `writers + 4`: each writer, the two notification senders and
    /// the `LISTEN` connection keep one of their own.
    pub fn max_connections(mut self, connections: u32) -> Self {
        self.max_connections = connections.max(2);
        self
    }

    /// How many PostgreSQL connections write appends (default 1). Writer k owns the
    /// partitions p with p % writers = k and group-commits whatever appends wait for
    /// it, so more writers mean more transactions in flight but smaller batches; on a
    /// small machine one writer with large batches is fastest.
    pub fn writers(mut self, writers: usize) -> Self {
        self.writers = writers.max(1);
        self
    }

    /// On SQLite, how long a read-model write transaction (a transactional projection's
    /// batch, say) may await anything other than its own statements: a timer, a lock,
    /// a network call (default 50 ms). The transaction is run by the store's single
    /// writer, which every other write of the process waits for meanwhile; past the
    /// limit it is rolled back and fails with [`Error::TransactionAwaited`], and the
    /// others go on. Other engines run each transaction on its own connection and
    /// ignore this.
    pub fn transaction_await_limit(mut self, limit: Duration) -> Self {
        self.transaction_await_limit = limit;
        self
    }

    /// How often a subscriber or a wait for a group looks for what another process
    /// wrote, when no notification came (default: 250 ms on SQLite, 1 s on PostgreSQL,
    /// whose notifications wake them first).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = Some(interval);
        self
    }

    /// Keeps subjects' keys (see [`personal`](crate::personal)) in the annals database at
    /// `url` instead of the store's own. A backup of the store's database then holds
    /// personal data only sealed, and an erasure reaches it even when the backup was
    /// taken before; keep the key database's own backups short-lived. Every process that
    /// opens the store (a server, a worker, the CLI) must name the same key database.
    pub fn keys(mut self, url: impl Into<String>) -> Self {
        self.keys = Some(url.into());
        self
    }

    /// How long a process seals with a subject's key without asking the key store
    /// again (default 1 s; zero asks on every append). An erasure made by another
    /// process is refused here only once this has passed since the key was last asked
    /// for; what is written meanwhile is sealed under the erased key, so it reads as
    /// erased at once. Reads never use the cache: they ask the key store every time.
    pub fn key_cache_ttl(mut self, ttl: Duration) -> Self {
        self.key_cache_ttl = ttl;
        self
    }

    /// The engine this URL names: `"memory"`, `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.location {
            Location::Memory => "memory",
            #[cfg(feature = "sqlite")]
            Location::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Location::Postgres(_) => "postgres",
        }
    }
}

/// `url` with any password replaced, for error messages and logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***{}", &url[..scheme], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_engine() {
        assert_eq!(StoreOptions::from_url("memory:").unwrap().backend_name(), "memory");
        let sqlite = StoreOptions::from_url("sqlite://data/x.db?synchronous=extra").unwrap();
        assert_eq!(
            (sqlite.backend_name(), sqlite.synchronous),
            ("sqlite", Synchronous::Extra)
        );
        assert_eq!(
            StoreOptions::from_url("postgres://u:p@h/db").unwrap().backend_name(),
            "postgres"
        );
    }

    #[test]
    fn rejects_what_it_cannot_open() {
        for url in [
            "mysql://x",
            "sqlite://",
            "sqlite://x.db?synchronous=sometimes",
            "sqlite://x.db?mode=ro",
            "",
        ] {
            assert!(
                matches!(StoreOptions::from_url(url), Err(Error::InvalidUrl { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn hides_passwords() {
        assert_eq!(
            redact("postgres://bob:secret@db:5432/x"),
            "postgres://bob:***@db:5432/x"
        );
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
    }
}
