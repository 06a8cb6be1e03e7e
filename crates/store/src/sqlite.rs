//! SQLite on one owner thread. A service hands over whole transactions (closures); the thread
//! runs every transaction waiting for it inside one database transaction, each under a
//! SAVEPOINT of its own (a failing one rolls back only itself), then COMMITs once for all of
//! them and only then answers their callers. One writer is what SQLite allows anyway; handing
//! over a transaction rather than each statement costs two thread wake-ups per transaction
//! instead of per statement, and the shared COMMIT makes `synchronous = FULL` affordable.

use std::collections::VecDeque;
use std::future::Future as _;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::conn::Conn;
use crate::{Durability, StoreError};

/// How many transactions one COMMIT covers at most.
const MAX_GROUP: usize = 128;
/// How many transactions may wait for the owner thread before callers wait to hand over.
const QUEUE: usize = 4096;

/// Where an SQLite store lives, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SqliteUrl {
    /// `None`: in memory, private to this store.
    pub(crate) path: Option<PathBuf>,
    pub(crate) create: bool,
    pub(crate) durability: Durability,
}

impl SqliteUrl {
    /// `sqlite::memory:`, `sqlite://relative.db`, `sqlite:///absolute.db`, with the query
    /// parameters `mode=rwc` (create the file if missing; `rw` does not) and
    /// `synchronous=full|normal`.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("sqlite:")
            .ok_or_else(|| "not an sqlite: URL".to_owned())?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut parsed = Self {
            path: None,
            create: false,
            durability: Durability::default(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("mode", "rwc") => parsed.create = true,
                ("mode", "rw") => parsed.create = false,
                ("synchronous", level) => {
                    parsed.durability = match level.to_ascii_lowercase().as_str() {
                        "full" => Durability::Full,
                        "normal" => Durability::Normal,
                        other => {
                            return Err(format!(
                                "synchronous={other} is not a level ctr runs with (full or normal)"
                            ));
                        }
                    }
                }
                (name, value) => {
                    return Err(format!("the parameter `{name}={value}` is not understood"));
                }
            }
        }
        let location = location.strip_prefix("//").unwrap_or(location);
        if location == ":memory:" || location.is_empty() {
            return Ok(parsed);
        }
        parsed.path = Some(PathBuf::from(location));
        Ok(parsed)
    }
}

fn open_connection(url: &SqliteUrl) -> Result<Connection, rusqlite::Error> {
    let conn = match &url.path {
        None => Connection::open_in_memory()?,
        Some(path) => {
            let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI;
            if url.create {
                flags |= OpenFlags::SQLITE_OPEN_CREATE;
            }
            Connection::open_with_flags(path, flags)?
        }
    };
    // Temporary tables, sorts and statement journals stay in memory: the images are FROM
    // scratch, with no /tmp for SQLite to spill them to (SQLITE_IOERR_GETTEMPPATH).
    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA temp_store = MEMORY;")?;
    if url.path.is_some() {
        // WAL: readers of other processes get in, and a COMMIT appends instead of
        // rewriting pages. The automatic checkpoint is only a backstop: the checkpointer
        // thread copies the log back every second, off the owner thread.
        let synchronous = match url.durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
             PRAGMA wal_autocheckpoint = 20000;"
        ))?;
    }
    conn.set_prepared_statement_cache_capacity(256);
    // The file is a database, or opening fails here rather than at the first request.
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |_| Ok(()))?;
    Ok(conn)
}

/// Runs `sql` on a connection of its own (see [`crate::execute_once`]).
pub(crate) fn execute_once(url: &SqliteUrl, sql: &str) -> Result<(), rusqlite::Error> {
    open_connection(url)?.execute_batch(sql)
}

/// One transaction handed to the owner thread.
trait Job: Send {
    /// Runs under the thread's SAVEPOINT; answers whether it succeeded (else it is rolled
    /// back) and how to answer its caller once the COMMIT's outcome is known.
    fn run(self: Box<Self>, conn: &mut Conn) -> (bool, Box<dyn Reply>);
    /// The transaction could not even begin.
    fn refuse(self: Box<Self>, error: StoreError);
}

trait Reply: Send {
    fn send(self: Box<Self>, committed: Result<(), String>);
}

struct Operation<F, T, E> {
    op: F,
    reply: oneshot::Sender<Result<T, E>>,
}

struct Answer<T, E> {
    result: Result<T, E>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T: Send, E: From<StoreError> + Send> Reply for Answer<T, E> {
    fn send(self: Box<Self>, committed: Result<(), String>) {
        let answer = match (committed, self.result) {
            (Ok(()), result) | (Err(_), result @ Err(_)) => result,
            (Err(error), Ok(_)) => Err(StoreError::Commit(error).into()),
        };
        // The caller may have gone (its request was cancelled): what committed stays.
        let _ = self.reply.send(answer);
    }
}

struct Nobody;

impl Reply for Nobody {
    fn send(self: Box<Self>, _: Result<(), String>) {}
}

impl<F, T, E> Job for Operation<F, T, E>
where
    F: for<'c> FnOnce(&'c mut Conn) -> futures::future::BoxFuture<'c, Result<T, E>> + Send,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut Conn) -> (bool, Box<dyn Reply>) {
        let Self { op, reply } = *self;
        // Every statement on this connection completes at once, so one poll runs the whole
        // operation. An operation that waits for anything else would stall every transaction
        // of the service: it fails (and is rolled back) instead.
        let mut operation = std::pin::pin!(op(conn));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        let result = match operation.as_mut().poll(&mut context) {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => {
                tracing::error!(
                    "a store operation waited for something other than its statements; it was rolled back"
                );
                Err(StoreError::WouldWait.into())
            }
        };
        (result.is_ok(), Box::new(Answer { result, reply }))
    }

    fn refuse(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error.into()));
    }
}

/// The handle to the owner thread; the thread ends when the last handle is dropped.
#[derive(Debug)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// COMMITs done by the owner thread so far.
    commits: Arc<AtomicU64>,
    /// Dropped with the writer, which stops the checkpointer.
    _checkpoints: Option<std::sync::mpsc::Sender<()>>,
}

impl std::fmt::Debug for dyn Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Writer {
    pub(crate) fn start(url: &SqliteUrl) -> Result<Self, String> {
        let conn = open_connection(url).map_err(|e| e.to_string())?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("ctr-store".into())
            .spawn(move || own(conn, queue, &counted))
            .map_err(|e| format!("the store's thread could not start: {e}"))?;
        let checkpoints = url.path.as_ref().map(|_| spawn_checkpointer(url.clone()));
        Ok(Self {
            jobs,
            commits,
            _checkpoints: checkpoints,
        })
    }

    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    pub(crate) async fn transact<T, E, F>(&self, op: F) -> Result<T, E>
    where
        F: for<'c> FnOnce(&'c mut Conn) -> futures::future::BoxFuture<'c, Result<T, E>>
            + Send
            + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(Operation { op, reply }))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Closed.into()))
    }
}

/// The owner thread: takes every transaction waiting, runs them under one COMMIT.
///
/// Every caller is told the truth: "committed" only once the COMMIT covering its transaction
/// succeeded, "failed" only when nothing of it is kept. SQLite may end the group's transaction
/// by itself when a statement fails (SQLITE_FULL, IOERR, NOMEM, BUSY roll the whole
/// transaction back, not just the statement): the thread checks after each job that the
/// transaction is still open, and once it is not, runs no further job of the group (a
/// SAVEPOINT outside a transaction would open one of its own, committed by its RELEASE). The
/// jobs that ran are told "failed" (SQLite rolled them back), the jobs not run yet go into the
/// next group, in a fresh transaction.
fn own(conn: Connection, mut queue: mpsc::Receiver<Box<dyn Job>>, commits: &AtomicU64) {
    let shared = Arc::new(Mutex::new(conn));
    let mut conn = Conn::sqlite(shared.clone());
    let exec = |sql: &str| shared.lock().execute_batch(sql);
    let in_transaction = || !shared.lock().is_autocommit();
    let mut group: VecDeque<Box<dyn Job>> = VecDeque::with_capacity(MAX_GROUP);
    let mut replies = Vec::with_capacity(MAX_GROUP);
    loop {
        if group.is_empty() {
            match queue.blocking_recv() {
                Some(first) => group.push_back(first),
                None => return,
            }
        }
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push_back(job),
                Err(_) => break,
            }
        }
        if let Err(error) = exec("BEGIN IMMEDIATE") {
            let message = error.to_string();
            for job in group.drain(..) {
                job.refuse(StoreError::Commit(message.clone()));
            }
            continue;
        }
        let mut broken = None;
        while let Some(job) = group.pop_front() {
            if let Err(error) = exec("SAVEPOINT op") {
                job.refuse(error.into());
                continue;
            }
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| job.run(&mut conn)));
            let (ok, reply) = ran.unwrap_or_else(|_| {
                tracing::error!("a store operation panicked; it was rolled back");
                (false, Box::new(Nobody))
            });
            replies.push(reply);
            if !in_transaction() {
                broken =
                    Some("SQLite rolled the transaction back after a failed statement".to_owned());
                break;
            }
            let ended = if ok {
                exec("RELEASE op")
            } else {
                exec("ROLLBACK TO op; RELEASE op")
            };
            // A savepoint that did not end leaves no telling what the group holds (a failed
            // transaction's writes, perhaps): the whole group is rolled back, its callers told.
            if let Err(error) = ended {
                broken = Some(error.to_string());
                break;
            }
            if !in_transaction() {
                broken = Some("the transaction ended while a savepoint was released".to_owned());
                break;
            }
            if !group.is_empty() {
                // A process that dies here leaves nothing of the group: none of it committed.
                fail::fail_point!("ctr-store::between-jobs", |_| std::process::abort());
            }
        }
        let committed = match broken {
            None => {
                crate::stats::commit();
                commits.fetch_add(1, Ordering::Relaxed);
                exec("COMMIT").map_err(|error| error.to_string())
            }
            Some(error) => Err(error),
        }
        .map_err(|error| {
            tracing::error!(%error, retried = group.len(), "the store could not commit; nothing of this group is kept, and the transactions it had not run yet run in the next");
            if in_transaction() {
                let _ = exec("ROLLBACK");
            }
            error
        });
        for reply in replies.drain(..) {
            reply.send(committed.clone());
        }
    }
}

/// Copies the write-ahead log back into the database every second from a connection of its
/// own, so the fsync a checkpoint needs never stalls the owner thread. Ends when the sender
/// it answers is dropped.
fn spawn_checkpointer(url: SqliteUrl) -> std::sync::mpsc::Sender<()> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("ctr-store-checkpoint".into())
        .spawn(move || {
            let conn = match open_connection(&SqliteUrl {
                create: false,
                ..url
            }) {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "the WAL checkpointer could not open the store; automatic checkpoints remain");
                    return;
                }
            };
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_secs(1))
            {
                if let Err(error) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                    tracing::warn!(%error, "WAL checkpoint failed");
                }
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "the WAL checkpointer could not start; automatic checkpoints remain");
    }
    stop
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_file_the_mode_and_the_durability() {
        let url = SqliteUrl::parse("sqlite:///data/points.db?mode=rwc").unwrap();
        assert_eq!(url.path, Some(PathBuf::from("/data/points.db")));
        assert!(url.create);
        assert_eq!(url.durability, Durability::default());
        let url = SqliteUrl::parse("sqlite://p.db?synchronous=normal").unwrap();
        assert_eq!(url.path, Some(PathBuf::from("p.db")));
        assert!(!url.create);
        assert_eq!(url.durability, Durability::Normal);
        assert_eq!(SqliteUrl::parse("sqlite::memory:").unwrap().path, None);
        assert!(SqliteUrl::parse("sqlite://p.db?synchronous=off").is_err());
        assert!(SqliteUrl::parse("sqlite://p.db?cache=shared").is_err());
    }
}
