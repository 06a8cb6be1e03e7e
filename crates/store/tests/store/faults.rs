//! Faults of the database itself: every caller told "committed" finds its writes, every
//! caller told "failed" left nothing, wherever in a group commit the fault struck.

use std::time::Duration;

use ctr_store::{Migration, Store, StoreError, query, query_as};

use crate::support::{self, postgres};

const NOTES: Migration = Migration {
    version: 1,
    name: "notes",
    sql: "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
};

/// How many transactions wait together in the group under test.
const GROUP: i64 = 8;

async fn ids(store: &Store) -> Vec<i64> {
    store
        .fetch_all(query_as::<(i64,)>("SELECT id FROM notes ORDER BY id"))
        .await
        .unwrap()
        .into_iter()
        .map(|(id,)| id)
        .collect()
}

/// Holds the store's owner thread for `hold`, so that what is handed over meanwhile waits
/// together and runs as one group.
fn hold_the_writer(store: &Store, hold: Duration) -> tokio::task::JoinHandle<()> {
    let store = store.clone();
    tokio::spawn(async move {
        store
            .transact(move |_| {
                Box::pin(async move {
                    std::thread::sleep(hold);
                    Ok::<_, StoreError>(())
                })
            })
            .await
            .unwrap();
    })
}

#[tokio::test]
async fn a_database_filling_up_anywhere_in_a_group_commit_tells_every_caller_the_truth() {
    for full_at in 0..GROUP {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("full.db").display());
        let store = Store::open(&url, &[NOTES]).await.unwrap();
        store
            .execute(query(
                "INSERT INTO notes (id, body) VALUES (1000, 'before')",
            ))
            .await
            .unwrap();
        // No page more than the file has: small rows still fit in the table's page, a
        // megabyte needs overflow pages and fails with SQLITE_FULL, which makes SQLite roll
        // back the whole transaction, not only the statement.
        store
            .transact(|tx| {
                Box::pin(async move {
                    let (pages,): (i64,) = query_as("PRAGMA page_count").fetch_one(tx).await?;
                    query_as::<(i64,)>(format!("PRAGMA max_page_count = {pages}"))
                        .fetch_one(tx)
                        .await?;
                    Ok::<_, StoreError>(())
                })
            })
            .await
            .unwrap();

        let holder = hold_the_writer(&store, Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut callers = Vec::new();
        for i in 0..GROUP {
            let store = store.clone();
            let body = if i == full_at {
                "x".repeat(1 << 20)
            } else {
                format!("n{i}")
            };
            callers.push(tokio::spawn(async move {
                store
                    .transact(move |tx| {
                        Box::pin(async move {
                            query("INSERT INTO notes (id, body) VALUES ($1, $2)")
                                .bind(i)
                                .bind(body)
                                .execute(tx)
                                .await
                        })
                    })
                    .await
            }));
            // In this order into the queue.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        holder.await.unwrap();
        let mut told = Vec::new();
        for caller in callers {
            told.push(caller.await.unwrap());
        }
        assert!(
            told[usize::try_from(full_at).unwrap()].is_err(),
            "the megabyte does not fit"
        );

        // What a fresh process finds.
        drop(store);
        let store = Store::open(&url, &[NOTES]).await.unwrap();
        let kept = ids(&store).await;
        for (i, answer) in (0..GROUP).zip(&told) {
            assert_eq!(
                kept.contains(&i),
                answer.is_ok(),
                "full at position {full_at}: transaction {i} was told {answer:?}, and the database {} it",
                if kept.contains(&i) { "keeps" } else { "lost" }
            );
        }
        assert!(
            kept.contains(&1000),
            "a fault takes nothing committed before it"
        );
        // Transactions after the fault are not lost with it: they run in a fresh one.
        for i in full_at + 1..GROUP {
            assert!(
                kept.contains(&i),
                "full at {full_at}: {i} ran after the fault and is kept"
            );
        }
    }
}

/// A fresh database for these tests.
async fn fresh_database(admin: &str) -> String {
    support::fresh_database(admin, "faults").await
}

#[tokio::test]
async fn postgres_a_connection_killed_anywhere_in_a_transaction_leaves_nothing_and_the_store_carries_on()
 {
    let Some(admin) = postgres() else {
        return;
    };
    let url = fresh_database(&admin).await;
    let store = Store::open(&url, &[NOTES]).await.unwrap();
    // Killed before the first statement, between statements, and after the last one (its
    // COMMIT then meets a dead connection).
    for killed_after in 0..=3_i64 {
        let killer = url.clone();
        let answer = store
            .transact(move |tx| {
                Box::pin(async move {
                    for i in 0..3_i64 {
                        if i == killed_after {
                            kill_own_backend(tx, &killer).await?;
                        }
                        query("INSERT INTO notes (id, body) VALUES ($1, 'lost')")
                            .bind(killed_after * 10 + i)
                            .execute(tx)
                            .await?;
                    }
                    if killed_after == 3 {
                        kill_own_backend(tx, &killer).await?;
                    }
                    Ok::<_, StoreError>(())
                })
            })
            .await;
        assert!(answer.is_err(), "killed after {killed_after}: {answer:?}");
        let kept: Vec<i64> = ids(&store)
            .await
            .into_iter()
            .filter(|id| id / 10 == killed_after)
            .collect();
        assert!(
            kept.is_empty(),
            "killed after {killed_after}: kept {kept:?}"
        );
    }
    // The pool replaced the dead connections.
    store
        .execute(query("INSERT INTO notes (id, body) VALUES (1000, 'kept')"))
        .await
        .unwrap();
    assert_eq!(ids(&store).await, [1000]);
}

/// Terminates the server process of the connection `tx` runs on, from another connection.
async fn kill_own_backend(tx: &mut ctr_store::Conn, url: &str) -> Result<(), StoreError> {
    let (pid,): (i64,) = query_as("SELECT CAST(pg_backend_pid() AS BIGINT)")
        .fetch_one(tx)
        .await?;
    ctr_store::execute_once(url, &format!("SELECT pg_terminate_backend({pid})")).await
}

/// A TCP stand-in for the PostgreSQL server (without TLS) that, once armed, forwards the next
/// `COMMIT` to the server and loses its answer: the connection breaks as the server commits.
struct LosesCommitAnswer {
    addr: std::net::SocketAddr,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LosesCommitAnswer {
    /// A store at `url` (postgres://user:password@host:port/db) reached through a stand-in
    /// started for it, without TLS.
    async fn open(url: &str) -> (Self, Store) {
        let (credentials, rest) = url.split_once('@').unwrap();
        let (server, database) = rest.split_once('/').unwrap();
        let proxy = Self::start(server.to_owned()).await;
        let through = format!("{credentials}@{}/{database}?sslmode=disable", proxy.addr);
        let store = Store::open(&through, &[NOTES]).await.unwrap();
        (proxy, store)
    }

    async fn start(server: String) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (arming, losing) = (armed.clone(), lost.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = tokio::net::TcpStream::connect(&server).await.unwrap();
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = upstream.into_split();
                let (armed, lost) = (arming.clone(), losing.clone());
                // This connection's COMMIT answer is to be lost from the moment it is sent.
                let dropping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let drop_answer = dropping.clone();
                tokio::spawn(async move {
                    // The startup message has no type byte: a length, then that many bytes.
                    let length = from_client.read_i32().await.unwrap_or(0);
                    let mut startup = vec![0; usize::try_from(length - 4).unwrap_or(0)];
                    if from_client.read_exact(&mut startup).await.is_err() {
                        return;
                    }
                    to_server.write_i32(length).await.unwrap();
                    to_server.write_all(&startup).await.unwrap();
                    loop {
                        let Ok(kind) = from_client.read_u8().await else {
                            return;
                        };
                        let length = from_client.read_i32().await.unwrap();
                        let mut body = vec![0; usize::try_from(length - 4).unwrap()];
                        from_client.read_exact(&mut body).await.unwrap();
                        if kind == b'Q' && body.starts_with(b"COMMIT") && armed.swap(false, SeqCst)
                        {
                            drop_answer.store(true, SeqCst);
                            lost.store(true, SeqCst);
                        }
                        let mut message = vec![kind];
                        message.extend_from_slice(&length.to_be_bytes());
                        message.extend_from_slice(&body);
                        if to_server.write_all(&message).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buffer = vec![0; 64 * 1024];
                    loop {
                        let Ok(n) = from_server.read(&mut buffer).await else {
                            return;
                        };
                        if n == 0 || dropping.load(SeqCst) {
                            // The server's answer to the COMMIT: lost with the connection.
                            let _ = to_client.shutdown().await;
                            return;
                        }
                        if to_client.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, armed, lost }
    }
}

#[tokio::test]
async fn postgres_a_commit_whose_answer_is_lost_is_answered_by_what_the_server_did() {
    use std::sync::atomic::Ordering::SeqCst;
    let Some(admin) = postgres() else {
        return;
    };
    let (proxy, store) = LosesCommitAnswer::open(&fresh_database(&admin).await).await;

    proxy.armed.store(true, SeqCst);
    let answer = store
        .transact(|tx| {
            Box::pin(async move {
                query("INSERT INTO notes (id, body) VALUES (1, 'committed')")
                    .execute(tx)
                    .await
            })
        })
        .await;
    assert!(proxy.lost.load(SeqCst), "the COMMIT's answer was lost");
    assert!(
        answer.is_ok(),
        "the server committed, so the caller is told so: {answer:?}"
    );
    assert_eq!(ids(&store).await, [1]);
}

#[tokio::test]
async fn postgres_a_one_write_transaction_whose_answers_are_lost_is_never_told_a_wrong_outcome() {
    use std::sync::atomic::Ordering::SeqCst;
    let Some(admin) = postgres() else {
        return;
    };
    let (proxy, store) = LosesCommitAnswer::open(&fresh_database(&admin).await).await;

    // BEGIN, the id query, the guarded insert, the last read and the COMMIT leave in one
    // write; every answer after the server received the COMMIT is lost.
    for id in 1..=5_i64 {
        proxy.armed.store(true, SeqCst);
        let answer = store
            .transact_pipelined(move |tx| {
                Box::pin(async move {
                    let insert =
                        query("INSERT INTO notes (id, body) VALUES ($1, 'n') RETURNING id")
                            .bind(id);
                    tx.guarded(insert, 1).await?;
                    let (count,): (i64,) = query_as("SELECT COUNT(*) FROM notes")
                        .fetch_one_last(tx)
                        .await?;
                    Ok::<_, StoreError>(count)
                })
            })
            .await;
        assert!(proxy.lost.swap(false, SeqCst), "the answers were lost");
        let kept = ids(&store).await.contains(&id);
        match answer {
            // Told "committed" only when it did, "failed" only when nothing is kept; what
            // cannot be known is said so, and the row is then whatever the server did.
            Ok(count) => assert!(kept && count >= 1, "{id}: told committed"),
            Err(StoreError::CommitUnknown(_)) => {}
            Err(error) => assert!(!kept, "{id}: told failed ({error}) but kept"),
        }
    }
}

#[tokio::test]
async fn postgres_deferred_writes_travel_with_the_commit_and_one_that_fails_keeps_nothing() {
    let Some(admin) = postgres() else {
        return;
    };
    let url = fresh_database(&admin).await;
    let store = Store::open(&url, &[NOTES]).await.unwrap();
    store
        .execute(query("INSERT INTO notes (id, body) VALUES (1, 'first')"))
        .await
        .unwrap();
    let write = |id: i64| query("INSERT INTO notes (id, body) VALUES ($1, 'n')").bind(id);
    // The deferred duplicate fails on the server with the COMMIT already sent behind it.
    let answer = store
        .transact(move |tx| {
            Box::pin(async move {
                write(2).execute(tx).await?;
                tx.defer(write(3)).await?;
                tx.defer(write(1)).await?;
                Ok::<_, StoreError>(())
            })
        })
        .await;
    assert!(answer.is_err(), "a deferred write failed: {answer:?}");
    assert_eq!(
        ids(&store).await,
        [1],
        "nothing of that transaction is kept"
    );

    // Deferred writes are kept with the transaction, and a statement read after one sees it.
    let seen = store
        .transact(move |tx| {
            Box::pin(async move {
                write(2).execute(tx).await?;
                tx.defer(write(3)).await?;
                let (count,): (i64,) = query_as("SELECT COUNT(*) FROM notes").fetch_one(tx).await?;
                tx.defer(write(4)).await?;
                Ok::<_, StoreError>(count)
            })
        })
        .await
        .unwrap();
    assert_eq!(seen, 3);
    assert_eq!(ids(&store).await, [1, 2, 3, 4]);
}
