//! Pipelined transactions: guarded and deferred writes travel with the COMMIT, one round trip
//! on PostgreSQL, and a guard that does not hold writes nothing and runs the operation again to
//! find out why. On SQLite the same operations answer the same. One test, alone in its binary:
//! the round trips are counted process-wide.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use ctr_store::{Backend, Migration, Prelude, PreludeOutcome, Store, StoreError, query, query_as};

mod support;

const ACCOUNTS: Migration = Migration {
    version: 1,
    name: "accounts",
    sql: "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL); \
          CREATE TABLE moves (id BIGINT PRIMARY KEY, account BIGINT NOT NULL, amount BIGINT NOT NULL); \
          CREATE TABLE proofs (key TEXT PRIMARY KEY)",
};

/// The stores under test: SQLite always, PostgreSQL when the suite has a server (CI has), with
/// the admin URL and the database to drop afterwards.
async fn stores() -> (Vec<Store>, Option<(String, String)>) {
    let mut stores = vec![Store::open("sqlite::memory:", &[ACCOUNTS]).await.unwrap()];
    let mut made = None;
    if let Some(admin) = support::postgres() {
        let url = support::fresh_database(&admin, "pipelined").await;
        stores.push(Store::open(&url, &[ACCOUNTS]).await.unwrap());
        let (_, name) = url.rsplit_once('/').unwrap();
        made = Some((admin, name.to_owned()));
    }
    (stores, made)
}

#[derive(Debug, PartialEq)]
enum Refusal {
    Insufficient,
    Store(String),
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        Self::Store(error.to_string())
    }
}

/// Spends `amount` from account 1 as move `id`: the debit is guarded (the balance must
/// cover it), the move deferred, and the balance left read last, with the COMMIT.
async fn spend(store: &Store, id: i64, amount: i64) -> Result<i64, Refusal> {
    store
        .transact_pipelined(move |tx| {
            Box::pin(async move {
                let debit = query(
                    "UPDATE accounts SET balance = balance - $1 \
                     WHERE id = 1 AND balance >= $1 RETURNING id",
                )
                .bind(amount);
                if !tx.guarded(debit, 1).await? {
                    return Err(Refusal::Insufficient);
                }
                tx.defer(
                    query("INSERT INTO moves (id, account, amount) VALUES ($1, 1, $2)")
                        .bind(id)
                        .bind(amount),
                )
                .await?;
                let (balance,): (i64,) = query_as("SELECT balance FROM accounts WHERE id = 1")
                    .fetch_one_last(tx)
                    .await?;
                Ok(balance)
            })
        })
        .await
}

async fn state(store: &Store) -> (i64, Vec<i64>) {
    let (balance,): (i64,) = store
        .fetch_one(query_as("SELECT balance FROM accounts WHERE id = 1"))
        .await
        .unwrap();
    let moves = store
        .fetch_all(query_as::<(i64,)>("SELECT id FROM moves ORDER BY id"))
        .await
        .unwrap()
        .into_iter()
        .map(|(id,)| id)
        .collect();
    (balance, moves)
}

#[tokio::test]
async fn guarded_writes_travel_with_the_commit_and_one_that_does_not_hold_writes_nothing() {
    let (stores, made) = stores().await;
    for store in stores {
        let engine = store.backend();
        store
            .execute(query("INSERT INTO accounts (id, balance) VALUES (1, 100)"))
            .await
            .unwrap();

        // Warm: the connection prepares the statements once.
        assert_eq!(spend(&store, 1, 10).await, Ok(90), "{engine:?}");
        let before = ctr_store::stats();
        assert_eq!(spend(&store, 2, 30).await, Ok(60), "{engine:?}");
        let spent = ctr_store::stats() - before;
        if engine == Backend::Postgres {
            assert_eq!(spent.round_trips, 1, "one write and its answers: {spent:?}");
            assert_eq!(spent.reruns, 0);
        }

        // The debit does not hold: nothing of the operation is kept, and the second run,
        // unpipelined, answers why.
        let before = ctr_store::stats();
        assert_eq!(
            spend(&store, 3, 61).await,
            Err(Refusal::Insufficient),
            "{engine:?}"
        );
        if engine == Backend::Postgres {
            assert_eq!((ctr_store::stats() - before).reruns, 1);
        }
        assert_eq!(state(&store).await, (60, vec![1, 2]), "{engine:?}");

        // A deferred write that fails fails the operation, and its guarded debit with it.
        let answer = spend(&store, 2, 5).await;
        assert!(
            matches!(answer, Err(Refusal::Store(_))),
            "{engine:?}: {answer:?}"
        );
        assert_eq!(state(&store).await, (60, vec![1, 2]), "{engine:?}");

        // Racing spenders: every one told "spent" is kept, the others left nothing.
        let racers: Vec<_> = (10..26_i64)
            .map(|id| {
                let store = store.clone();
                tokio::spawn(async move { spend(&store, id, 7).await })
            })
            .collect();
        let mut spent = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(_) => spent += 1,
                Err(Refusal::Insufficient) => {}
                Err(other) => panic!("{engine:?}: {other:?}"),
            }
        }
        assert_eq!(spent, 8, "{engine:?}: 60 covers 8 moves of 7");
        let (balance, moves) = state(&store).await;
        assert_eq!((balance, moves.len()), (4, 10), "{engine:?}");

        // A guarded read counts the rows it answers, not what the write before it changed.
        let answered = store
            .transact(|tx| {
                Box::pin(async move {
                    query("UPDATE accounts SET balance = balance WHERE id = 1")
                        .execute(tx)
                        .await?;
                    tx.guarded(query("SELECT id FROM accounts WHERE id = 2"), 1)
                        .await
                })
            })
            .await
            .unwrap();
        assert!(!answered, "{engine:?}");

        // A request's prelude rides with a single statement's write, and one that changes no
        // row refuses it whole.
        let record =
            || query("INSERT INTO proofs (key) VALUES ('p') ON CONFLICT DO NOTHING RETURNING 1");
        for (id, outcome) in [
            (100, PreludeOutcome::Committed),
            (101, PreludeOutcome::Refused),
        ] {
            let prelude = Prelude::new();
            let before = ctr_store::stats();
            let answer = prelude
                .scope(async {
                    assert!(Prelude::set(record()));
                    store
                        .execute(
                            query("INSERT INTO moves (id, account, amount) VALUES ($1, 1, 0)")
                                .bind(id),
                        )
                        .await
                })
                .await;
            assert_eq!(prelude.outcome(), outcome, "{engine:?}");
            if outcome == PreludeOutcome::Committed {
                assert_eq!(answer.unwrap(), 1);
                if engine == Backend::Postgres {
                    // The statement was prepared above: its write is the one round trip.
                    assert!((ctr_store::stats() - before).round_trips <= 2);
                }
            } else {
                assert!(
                    matches!(answer, Err(StoreError::PreludeRefused)),
                    "{answer:?}"
                );
            }
        }
        let (_, moves) = state(&store).await;
        assert!(
            moves.contains(&100) && !moves.contains(&101),
            "{engine:?}: {moves:?}"
        );
    }
    if let Some((admin, name)) = made {
        ctr_store::execute_once(&admin, &format!("DROP DATABASE {name} WITH (FORCE)"))
            .await
            .unwrap();
    }
}
