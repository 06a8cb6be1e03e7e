//! Durable state for a ctr service: one SQL store, chosen by URL. An embedded SQLite file is
//! the default (`sqlite:///data/points.db?mode=rwc`); PostgreSQL (`postgres://...`) serves
//! several replicas of a service; `sqlite::memory:` is for tests and benchmarks.
//!
//! The unit of work is a whole transaction: a service hands [`Store::transact`] a closure that
//! runs its statements on a [`Conn`], and gets the closure's answer once the transaction has
//! committed (an `Err` rolls it back). On SQLite the closure runs on the store's one owner
//! thread, with every other transaction waiting at the time, under one COMMIT (group commit);
//! on PostgreSQL it runs on a pooled connection, pipelined (`BEGIN` travels with the first
//! statement, [`Conn::defer`]red writes with the COMMIT: see the `postgres` module). A hot
//! operation runs through [`Store::transact_pipelined`]: its conditional writes are
//! [`Conn::guarded`], checked by the server, so that they and the COMMIT leave in one write and
//! the operation costs one round trip. Every statement is plain SQL valid on both
//! engines (`$1` parameters, `TEXT` and `BIGINT` columns, no row locks: rules hold through
//! conditional updates), so one code path serves both. Migrations are embedded in the binary
//! and run at start.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use ctr_store::{Migration, Store, StoreError, query, query_as};
//!
//! const MIGRATIONS: &[Migration] = &[Migration {
//!     version: 1,
//!     name: "notes",
//!     sql: "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
//! }];
//! let store = Store::open("sqlite::memory:", MIGRATIONS).await?;
//! let body = store
//!     .transact(|tx| {
//!         Box::pin(async move {
//!             query("INSERT INTO notes (id, body) VALUES ($1, $2)")
//!                 .bind(1_i64)
//!                 .bind("kept")
//!                 .execute(tx)
//!                 .await?;
//!             let (body,): (String,) = query_as("SELECT body FROM notes WHERE id = $1")
//!                 .bind(1_i64)
//!                 .fetch_one(tx)
//!                 .await?;
//!             Ok::<_, StoreError>(body)
//!         })
//!     })
//!     .await?;
//! assert_eq!(body, "kept");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod conn;
mod migrate;
mod postgres;
mod prelude;
mod sqlite;
mod stats;
mod value;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::Pool as PgPool;
use futures::future::BoxFuture;

pub use conn::{Conn, Query, QueryAs, query, query_as};
pub use migrate::Migration;
pub use prelude::{Prelude, PreludeOutcome};
pub use stats::{StoreStats, stats};
pub use value::{FromRow, FromValue, Param, Row, Value};

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What an SQLite file's COMMIT survives (the URL's `synchronous=` parameter).
///
/// `Full` (the default) syncs the write-ahead log at every COMMIT: a committed transaction
/// survives a crash of the process and a loss of power. `Normal` syncs only at checkpoints:
/// it survives a crash of the process, but a power loss may take the last transactions
/// committed before it (never corrupting the database). Group commit shares one sync among
/// every transaction waiting, which is what makes `Full` affordable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    #[default]
    Full,
    Normal,
}

/// Why the store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store URL `{0}` names no supported engine (sqlite: or postgres:)")]
    Url(String),
    #[error("the store {url} could not be opened: {reason}")]
    Open { url: String, reason: String },
    #[error("the store {url} has a schema this binary cannot use: {reason}")]
    Schema { url: String, reason: String },
    #[error("the store is unavailable: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store could not commit: {0}")]
    Commit(String),
    /// The COMMIT's answer was lost and the server could not be asked since: the transaction
    /// may or may not have committed. Callers treat it as a failure; what decides the outcome
    /// after it must be read back from the store.
    #[error("the outcome of the COMMIT is unknown: {0}")]
    CommitUnknown(String),
    #[error("the store was closed")]
    Closed,
    /// The task's [`Prelude`] changed no row: the transaction wrote nothing.
    #[error("the request's prelude statement changed no row")]
    PreludeRefused,
    /// A guarded write ([`Conn::guarded`]) changed other than the rows it should, in a
    /// pipelined transaction: nothing was written.
    #[error("a guarded write changed other than the rows it should")]
    Unmet,
    #[error("a statement ran after the transaction's last")]
    Ended,
    #[error("a store operation waited for something other than its statements")]
    WouldWait,
    #[error("the statement answered no row")]
    NoRow,
    #[error("a stored value could not be read: {0}")]
    Decode(String),
}

/// A service's store, migrated to this binary's schema. Clones share it.
#[derive(Debug, Clone)]
pub struct Store {
    engine: Engine,
}

#[derive(Debug, Clone)]
enum Engine {
    Sqlite(Arc<sqlite::Writer>),
    Postgres(PgPool),
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
        let open = |reason: String| StoreError::Open {
            url: redact(url),
            reason,
        };
        let engine = if url.starts_with("sqlite:") {
            let parsed = sqlite::SqliteUrl::parse(url).map_err(&open)?;
            Engine::Sqlite(Arc::new(sqlite::Writer::start(&parsed).map_err(open)?))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Engine::Postgres(postgres::pool(url).map_err(open)?)
        } else {
            return Err(StoreError::Url(redact(url)));
        };
        let store = Self { engine };
        let migrations = migrations.to_vec();
        store
            .transact(move |tx| Box::pin(async move { migrate::migrate(tx, &migrations).await }))
            .await
            .map_err(|e| match e {
                migrate::MigrateError::Schema(reason) => StoreError::Schema {
                    url: redact(url),
                    reason,
                },
                migrate::MigrateError::Store(e) => open(e.to_string()),
            })?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        match self.engine {
            Engine::Sqlite(_) => Backend::Sqlite,
            Engine::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs `op` as one transaction and answers what it answered once that has committed;
    /// an `Err` rolls back everything `op` wrote. On SQLite, `op` shares its COMMIT with
    /// the other transactions waiting (each under a SAVEPOINT of its own, so one that fails
    /// rolls back only itself), and it must not wait for anything but its statements.
    ///
    /// An operation that must answer a refusal and still keep what it wrote (an expiry it
    /// noticed on the way) answers `Ok(Err(refusal))`.
    pub async fn transact<T, E, F>(&self, op: F) -> Result<T, E>
    where
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.run(op, false).await.0
    }

    /// [`Self::transact`] in as few round trips as the operation allows: on PostgreSQL its
    /// [`Conn::guarded`] and [`Conn::defer`]red writes wait and travel with the COMMIT (and
    /// its last statement, [`Query::execute_last`]), so an operation that reads no answer
    /// before its last statement is one round trip. When a guarded write turns out to have
    /// changed other than the rows it should, nothing was written, and `op` runs again,
    /// unpipelined, to find out why; so `op` may run twice. On SQLite it is
    /// [`Self::transact`].
    pub async fn transact_pipelined<T, E, F>(&self, op: F) -> Result<T, E>
    where
        F: for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<T, E>> + Send + Sync + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        if self.backend() == Backend::Sqlite {
            return self.transact(op).await;
        }
        let op = Arc::new(op);
        let first = op.clone();
        let (answer, unmet) = self.run(move |tx| first(tx), true).await;
        if !unmet {
            return answer;
        }
        stats::rerun();
        self.transact(move |tx| op(tx)).await
    }

    /// Runs `op` as one transaction with the task's prelude, if any; answers also whether a
    /// guard of `op`'s failed (PostgreSQL, `pipelined`).
    async fn run<T, E, F>(&self, op: F, pipelined: bool) -> (Result<T, E>, bool)
    where
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        stats::transaction();
        let taken = prelude::take();
        let statement = taken.as_ref().map(|(_, statement)| statement.clone());
        let (result, refused, unmet) = match &self.engine {
            Engine::Sqlite(writer) => {
                let refused = Arc::new(AtomicBool::new(false));
                let noticed = refused.clone();
                let result = writer
                    .transact(move |tx| {
                        Box::pin(async move {
                            if let Some(statement) = statement
                                && let Err(error) = tx.prelude(statement).await
                            {
                                if matches!(error, StoreError::PreludeRefused) {
                                    noticed.store(true, Ordering::Relaxed);
                                }
                                return Err(error.into());
                            }
                            op(tx).await
                        })
                    })
                    .await;
                (result, refused.load(Ordering::Relaxed), false)
            }
            Engine::Postgres(pool) => match postgres::connection(pool).await {
                Ok(client) => postgres_transaction(client, pool, statement, op, pipelined).await,
                Err(error) => (Err(error.into()), false, false),
            },
        };
        if let Some((prelude, _)) = taken {
            match (&result, refused) {
                (_, true) => prelude.refused(),
                (Ok(_), false) => prelude.committed(),
                (Err(_), false) => prelude.put_back(),
            }
        }
        if refused {
            return (Err(StoreError::PreludeRefused.into()), false);
        }
        (result, unmet)
    }

    /// One statement on its own (on PostgreSQL in autocommit, one round trip; on SQLite a
    /// transaction of the group like any other).
    async fn single<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        if prelude::pending() {
            // The request's prelude makes this statement a transaction, still one write.
            return self.transact(op).await;
        }
        stats::transaction();
        match &self.engine {
            Engine::Sqlite(writer) => writer.transact(op).await,
            Engine::Postgres(pool) => {
                stats::commit();
                let client = postgres::connection(pool).await?;
                let mut conn = Conn::postgres(postgres::Tx::autocommit(client, pool.clone()));
                op(&mut conn).await
            }
        }
    }

    /// One statement on its own; answers how many rows it changed.
    pub async fn execute(&self, statement: Query) -> Result<u64, StoreError> {
        self.single(move |tx| Box::pin(statement.execute_last(tx)))
            .await
    }

    /// One query on its own.
    pub async fn fetch_all<R: FromRow + Send + 'static>(
        &self,
        statement: QueryAs<R>,
    ) -> Result<Vec<R>, StoreError> {
        self.single(move |tx| Box::pin(statement.fetch_all_last(tx)))
            .await
    }

    /// One query answering at most one row, on its own.
    pub async fn fetch_optional<R: FromRow + Send + 'static>(
        &self,
        statement: QueryAs<R>,
    ) -> Result<Option<R>, StoreError> {
        self.single(move |tx| Box::pin(statement.fetch_optional_last(tx)))
            .await
    }

    /// One query answering one row, on its own.
    pub async fn fetch_one<R: FromRow + Send + 'static>(
        &self,
        statement: QueryAs<R>,
    ) -> Result<R, StoreError> {
        self.single(move |tx| Box::pin(statement.fetch_one_last(tx)))
            .await
    }

    /// How many COMMITs an SQLite store has done so far (none for PostgreSQL): with group
    /// commit, fewer than the transactions it ran.
    pub fn sqlite_commits(&self) -> Option<u64> {
        match &self.engine {
            Engine::Sqlite(writer) => Some(writer.commits()),
            Engine::Postgres(_) => None,
        }
    }

    /// An SQL expression for the database's clock, in Unix milliseconds. Leases are judged on
    /// it: every replica of a service reads the same clock, whatever its own says.
    pub fn now_ms_sql(&self) -> &'static str {
        match self.backend() {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS BIGINT)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// The database's clock in Unix seconds, as [`Self::now_ms_sql`].
    pub fn now_secs_sql(&self) -> &'static str {
        match self.backend() {
            Backend::Sqlite => "CAST(strftime('%s', 'now') AS BIGINT)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)",
        }
    }

    /// A round trip, for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.execute(query("SELECT 1")).await.map(drop)
    }
}

/// Runs `op` as one transaction on `client` (pipelined or not), the request's prelude
/// `statement` first as a guard the server checks; answers whether the prelude's guard or one
/// of `op`'s failed.
async fn postgres_transaction<T, E, F>(
    client: deadpool_postgres::Object,
    pool: &PgPool,
    statement: Option<Query>,
    op: F,
    pipelined: bool,
) -> (Result<T, E>, bool, bool)
where
    F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
    E: From<StoreError>,
{
    let mut tx = postgres::Tx::transaction(client, pool.clone(), pipelined);
    if let Some(statement) = statement {
        // Checked by the server, with the next write.
        stats::statement();
        tx.defer(statement.into_parts(), Some(postgres::Guard::Prelude));
    }
    let mut conn = Conn::postgres(tx);
    let result = op(&mut conn).await;
    let Some(mut tx) = conn.into_postgres() else {
        return (Err(StoreError::Closed.into()), false, false);
    };
    let result = match result {
        Ok(answer) => tx.commit().await.map(|()| answer).map_err(E::from),
        Err(error) => {
            // Closing the connection would roll back too; asking keeps it for its next user.
            tx.rollback().await;
            Err(error)
        }
    };
    (result, tx.refused, tx.unmet)
}

/// Runs `sql` (one or more statements, no parameters) once on a connection of its own to the
/// database at `url`, outside any transaction and without migrating: for tools and tests
/// (`CREATE DATABASE`, a change an operator makes by hand).
pub async fn execute_once(url: &str, sql: &str) -> Result<(), StoreError> {
    let open = |reason: String| StoreError::Open {
        url: redact(url),
        reason,
    };
    if url.starts_with("sqlite:") {
        let parsed = sqlite::SqliteUrl::parse(url).map_err(&open)?;
        let sql = sql.to_owned();
        tokio::task::spawn_blocking(move || sqlite::execute_once(&parsed, &sql))
            .await
            .map_err(|e| open(e.to_string()))??;
        return Ok(());
    }
    postgres::execute_once(url, sql).await.map_err(open)
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

    fn insert(id: i64, body: &str) -> Query {
        query("INSERT INTO notes (id, body) VALUES ($1, $2)")
            .bind(id)
            .bind(body)
    }

    async fn bodies(store: &Store) -> Vec<String> {
        store
            .fetch_all(query_as::<(String,)>("SELECT body FROM notes ORDER BY id"))
            .await
            .unwrap()
            .into_iter()
            .map(|(b,)| b)
            .collect()
    }

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
        store.execute(insert(7, "kept")).await.unwrap();
        drop(store);

        let store = Store::open(&url, &[V1, V2]).await.unwrap();
        assert_eq!(bodies(&store).await, ["kept"]);
        let (versions,): (i64,) = store
            .fetch_one(query_as("SELECT COUNT(*) FROM _sqlx_migrations"))
            .await
            .unwrap();
        assert_eq!(versions, 2);
    }

    #[tokio::test]
    async fn parameters_are_bound_by_their_number_not_their_order() {
        let store = Store::open("sqlite::memory:", &[V1]).await.unwrap();
        store
            .execute(
                query("INSERT INTO notes (body, id) VALUES ($2 || $2, $1)")
                    .bind(3_i64)
                    .bind("ab"),
            )
            .await
            .unwrap();
        assert_eq!(bodies(&store).await, ["abab"]);
    }

    #[tokio::test]
    async fn transactions_waiting_together_share_a_commit_and_a_failing_one_rolls_back_alone() {
        // A file, synced at every COMMIT: transactions arriving during a sync wait for the next.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("g.db").display());
        let store = Store::open(&url, &[V1]).await.unwrap();
        let commits_before = store.sqlite_commits().unwrap();
        let tasks: Vec<_> = (0..64_i64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .transact(move |tx| {
                            Box::pin(async move {
                                insert(i, &format!("n{i}")).execute(tx).await?;
                                if i % 3 == 0 {
                                    // The second insert of the same id fails: all of this
                                    // transaction goes, the first insert included.
                                    insert(i, "again").execute(tx).await?;
                                }
                                Ok::<_, StoreError>(i)
                            })
                        })
                        .await
                })
            })
            .collect();
        let mut kept = 0;
        for (i, task) in (0_i64..).zip(tasks) {
            let answer = task.await.unwrap();
            assert_eq!(answer.is_ok(), i % 3 != 0, "{i}: {answer:?}");
            kept += i64::from(answer.is_ok());
        }
        let (count,): (i64,) = store
            .fetch_one(query_as("SELECT COUNT(*) FROM notes"))
            .await
            .unwrap();
        assert_eq!(count, kept);
        let (failed,): (i64,) = store
            .fetch_one(query_as("SELECT COUNT(*) FROM notes WHERE id % 3 = 0"))
            .await
            .unwrap();
        assert_eq!(failed, 0);
        let commits = store.sqlite_commits().unwrap() - commits_before;
        assert!(
            commits < 64,
            "64 transactions waiting together share COMMITs: {commits}"
        );
    }

    #[tokio::test]
    async fn a_panicking_operation_is_rolled_back_and_the_store_carries_on() {
        let store = Store::open("sqlite::memory:", &[V1]).await.unwrap();
        let answer = store
            .transact(|tx| {
                Box::pin(async move {
                    insert(1, "lost").execute(tx).await?;
                    if tx.backend() == Backend::Sqlite {
                        panic!("an operation's bug");
                    }
                    Ok::<_, StoreError>(())
                })
            })
            .await;
        assert!(matches!(answer, Err(StoreError::Closed)), "{answer:?}");
        store.execute(insert(2, "kept")).await.unwrap();
        assert_eq!(bodies(&store).await, ["kept"]);
    }

    #[tokio::test]
    async fn an_operation_that_waits_for_anything_but_its_statements_fails_and_stalls_nothing() {
        let store = Store::open("sqlite::memory:", &[V1]).await.unwrap();
        let answer = store
            .transact(|tx| {
                Box::pin(async move {
                    insert(1, "lost").execute(tx).await?;
                    tokio::task::yield_now().await;
                    Ok::<_, StoreError>(())
                })
            })
            .await;
        assert!(matches!(answer, Err(StoreError::WouldWait)), "{answer:?}");
        store.execute(insert(2, "kept")).await.unwrap();
        assert_eq!(bodies(&store).await, ["kept"]);
    }

    #[tokio::test]
    async fn a_refusal_may_keep_what_was_written_on_the_way() {
        let store = Store::open("sqlite::memory:", &[V1]).await.unwrap();
        let answer: Result<Result<(), &str>, StoreError> = store
            .transact(|tx| {
                Box::pin(async move {
                    insert(1, "noticed").execute(tx).await?;
                    Ok(Err("refused"))
                })
            })
            .await;
        assert_eq!(answer.unwrap(), Err("refused"));
        assert_eq!(bodies(&store).await, ["noticed"]);
    }

    #[tokio::test]
    async fn the_database_clock_reads_the_unix_time_in_both_units() {
        let store = Store::open("sqlite::memory:", &[V1]).await.unwrap();
        let (ms, s): (i64, i64) = store
            .fetch_one(query_as(format!(
                "SELECT {}, {}",
                store.now_ms_sql(),
                store.now_secs_sql()
            )))
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
    async fn an_sqlite_file_keeps_temporary_files_in_memory_and_syncs_as_its_url_says() {
        let dir = tempfile::tempdir().unwrap();
        for (parameter, level) in [("", 2), ("&synchronous=normal", 1)] {
            let path = dir.path().join(format!("t{level}.db"));
            let url = format!("sqlite://{}?mode=rwc{parameter}", path.display());
            let store = Store::open(&url, &[V1]).await.unwrap();
            let (temp_store, synchronous, journal): (i64, i64, String) = store
                .fetch_one(query_as(
                    "SELECT (SELECT temp_store FROM pragma_temp_store), \
                     (SELECT synchronous FROM pragma_synchronous), \
                     (SELECT journal_mode FROM pragma_journal_mode)",
                ))
                .await
                .unwrap();
            assert_eq!(temp_store, 2, "MEMORY: a FROM scratch image has no /tmp");
            assert_eq!(synchronous, level, "{url}");
            assert_eq!(journal, "wal");
        }
    }

    #[tokio::test]
    async fn a_database_from_a_newer_schema_or_a_corrupt_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("newer.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        drop(Store::open(&url, &[V1, V2]).await.unwrap());
        let error = Store::open(&url, &[V1]).await.unwrap_err();
        assert!(matches!(error, StoreError::Schema { .. }), "{error}");
        assert!(error.to_string().contains("newer.db"), "{error}");

        let changed = Migration {
            sql: "CREATE TABLE notes (id BIGINT PRIMARY KEY)",
            ..V1
        };
        let error = Store::open(&url, &[changed, V2]).await.unwrap_err();
        assert!(error.to_string().contains("different text"), "{error}");

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
        let error = Store::open("mysql://x", &[V1]).await.unwrap_err();
        assert!(matches!(error, StoreError::Url(_)), "{error}");
    }
}
