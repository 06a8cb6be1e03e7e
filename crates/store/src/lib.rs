//! Durable state for a ctr service: one SQL store, chosen by URL. An embedded SQLite file is
//! the default (`sqlite:///data/points.db?mode=rwc`); PostgreSQL (`postgres://...`) serves
//! several replicas of a service; `sqlite::memory:` is for tests and benchmarks. Every
//! statement a service writes is plain SQL valid on both engines (`$1` parameters, `TEXT` and
//! `BIGINT` columns, no row locks: rules hold through conditional updates), so one code path
//! serves both. Migrations are embedded in the binary and run at start.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use ctr_store::{Migration, Store};
//!
//! const MIGRATIONS: &[Migration] = &[Migration {
//!     version: 1,
//!     name: "notes",
//!     sql: "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
//! }];
//! let store = Store::open("sqlite::memory:", MIGRATIONS).await?;
//! ctr_store::sqlx::query("INSERT INTO notes (id, body) VALUES ($1, $2)")
//!     .bind(1_i64)
//!     .bind("kept")
//!     .execute(store.pool())
//!     .await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::borrow::Cow;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{MigrateError, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};

pub use sqlx;

/// A connection inside a transaction, as store code receives it.
pub type Conn = sqlx::AnyConnection;
pub type Transaction = sqlx::Transaction<'static, sqlx::Any>;

/// One embedded schema step: versions only grow, and a step never changes once released.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Why the store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store URL `{0}` names no supported engine (sqlite: or postgres:)")]
    Url(String),
    #[error("the store {url} could not be opened: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the store {url} has a schema this binary cannot use: {reason}")]
    Schema { url: String, reason: String },
    #[error("the store is unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
}

/// A pool over one database, migrated to this binary's schema.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl Store {
    /// Connects, applies `migrations` that are not applied yet, and answers the store.
    /// A database whose schema is newer than this binary, or that is not a database at all,
    /// is refused with an error naming it.
    pub async fn open(url: &str, migrations: &[Migration]) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(redact(url)));
        };
        let options = match backend {
            // SQLite has one writer: one connection serialises this process's transactions
            // instead of failing them with SQLITE_BUSY. WAL with synchronous=NORMAL survives a
            // crash of the process (not of the machine) and lets readers of other processes in.
            //
            // Temporary tables, sorts and statement journals stay in memory: the images are
            // FROM scratch, with no /tmp for SQLite to spill them to (it answered "disk I/O
            // error", SQLITE_IOERR_GETTEMPPATH, after some thousands of checkouts).
            //
            // An embedded connection cannot be lost the way a network one can, so the pool
            // does not ping it before each use: with sqlx's SQLite worker thread a ping is a
            // round trip of its own, one more per statement outside a transaction.
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                             PRAGMA busy_timeout = 5000; PRAGMA wal_autocheckpoint = 20000; \
                             PRAGMA temp_store = MEMORY;",
                        )
                        .await
                        .map(|_| ())
                    })
                }),
            Backend::Postgres => AnyPoolOptions::new().max_connections(16),
        }
        .acquire_timeout(Duration::from_secs(5));
        let open = |source| StoreError::Open {
            url: redact(url),
            source,
        };
        let pool = options.connect(url).await.map_err(open)?;
        let migrator = Migrator::with_migrations(
            migrations
                .iter()
                .map(|m| {
                    sqlx::migrate::Migration::new(
                        m.version,
                        Cow::Borrowed(m.name),
                        MigrationType::Simple,
                        sqlx::SqlSafeStr::into_sql_str(m.sql),
                        false,
                    )
                })
                .collect(),
        );
        migrator.run(&pool).await.map_err(|e| match e {
            MigrateError::Execute(source) => open(source),
            other => StoreError::Schema {
                url: redact(url),
                reason: other.to_string(),
            },
        })?;
        if backend == Backend::Sqlite && !url.contains(":memory:") {
            spawn_checkpointer(url.to_owned());
        }
        Ok(Self { pool, backend })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// An SQL expression for the database's clock, in Unix milliseconds. Leases are judged on
    /// it: every replica of a service reads the same clock, whatever its own says.
    pub fn now_ms_sql(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS BIGINT)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// The database's clock in Unix seconds, as [`Self::now_ms_sql`].
    pub fn now_secs_sql(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "CAST(strftime('%s', 'now') AS BIGINT)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)",
        }
    }

    pub async fn begin(&self) -> Result<Transaction, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// A round trip, for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Copies the SQLite write-ahead log back into the database every second from a connection
/// of its own, so that the fsync a checkpoint needs never stalls the connection that serves
/// requests (whose automatic checkpoint is only a backstop, at 20 000 pages).
fn spawn_checkpointer(url: String) {
    tokio::spawn(async move {
        use sqlx::Connection;
        let Ok(mut conn) = sqlx::AnyConnection::connect(&url).await else {
            tracing::warn!("the WAL checkpointer could not connect; automatic checkpoints remain");
            return;
        };
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Err(error) = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").await {
                tracing::warn!(%error, "WAL checkpoint failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: Migration = Migration {
        version: 1,
        name: "notes",
        sql: "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
    };
    const V2: Migration = Migration {
        version: 2,
        name: "tags",
        sql: "CREATE TABLE tags (id BIGINT PRIMARY KEY)",
    };

    #[test]
    fn urls_never_show_a_password() {
        assert_eq!(
            redact("postgres://ctr:s3cret@db:5432/ctr"),
            "postgres://ctr:***@db:5432/ctr"
        );
        assert_eq!(redact("sqlite:///data/x.db"), "sqlite:///data/x.db");
    }

    #[tokio::test]
    async fn data_outlives_the_process_and_migrations_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let store = Store::open(&url, &[V1]).await.unwrap();
        sqlx::query("INSERT INTO notes (id, body) VALUES ($1, $2)")
            .bind(7_i64)
            .bind("kept")
            .execute(store.pool())
            .await
            .unwrap();
        store.pool().close().await;

        let store = Store::open(&url, &[V1, V2]).await.unwrap();
        let (body,): (String,) = sqlx::query_as("SELECT body FROM notes WHERE id = $1")
            .bind(7_i64)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(body, "kept");
    }

    #[tokio::test]
    async fn the_database_clock_reads_the_unix_time_in_both_units() {
        let store = Store::open("sqlite::memory:", &[V1]).await.unwrap();
        let (ms, s): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {}, {}",
            store.now_ms_sql(),
            store.now_secs_sql()
        )))
        .fetch_one(store.pool())
        .await
        .unwrap();
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let system_ms = i64::try_from(system.as_millis()).unwrap();
        assert!((ms - system_ms).abs() < 2_000, "{ms} vs {system_ms}");
        assert!((s - ms / 1000).abs() <= 1, "{s} vs {ms}");
    }

    #[tokio::test]
    async fn an_sqlite_store_keeps_its_temporary_files_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let store = Store::open(&url, &[V1]).await.unwrap();
        let (temp_store,): (i64,) = sqlx::query_as("PRAGMA temp_store")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(temp_store, 2, "MEMORY: a FROM scratch image has no /tmp");
    }

    #[tokio::test]
    async fn a_database_from_a_newer_schema_or_a_corrupt_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("newer.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Store::open(&url, &[V1, V2])
            .await
            .unwrap()
            .pool()
            .close()
            .await;
        let error = Store::open(&url, &[V1]).await.unwrap_err();
        assert!(matches!(error, StoreError::Schema { .. }), "{error}");
        assert!(error.to_string().contains("newer.db"), "{error}");

        let corrupt = dir.path().join("corrupt.db");
        std::fs::write(
            &corrupt,
            b"this is not a database, just some bytes ".repeat(200),
        )
        .unwrap();
        let error = Store::open(&format!("sqlite://{}", corrupt.display()), &[V1])
            .await
            .unwrap_err();
        assert!(error.to_string().contains("corrupt.db"), "{error}");
    }
}
