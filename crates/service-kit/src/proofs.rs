//! The DPoP replay cache: every proof a service accepts is written to its store, so that the
//! same proof is refused at any replica. The rows outlive a proof's acceptance window only
//! until the next sweep.
//!
//! Both ends of a row's life are judged on the database's clock, which every replica shares: a
//! proof is recorded only while its window is still open on that clock, and swept only once it
//! has closed there. A replica whose own clock runs ahead can then never free a `jti` that
//! another replica, whose clock runs behind, would still accept.

use std::time::Duration;

use ctr_store::{Migration, Store, StoreError, query, query_as};

/// The service kit's tables, applied with every service's own.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 900,
    name: "dpop proofs",
    sql: include_str!("../migrations/0900_dpop_proofs.sql"),
}];

/// How often expired entries are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// What the store says of a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProofUse {
    /// Recorded now: the proof is accepted.
    First,
    /// Recorded before: a replay.
    Replayed,
    /// Its window has closed on the database's clock (this replica's clock runs behind).
    Expired,
}

/// The proofs seen, in the service's store.
#[derive(Clone)]
pub(crate) struct SeenProofs {
    store: Store,
    record: String,
    sweep: String,
    now: String,
}

impl SeenProofs {
    /// The cache in `store`, swept in the background while the store is open.
    pub(crate) fn new(store: Store) -> Self {
        let seen = Self::unswept(store);
        let sweeping = seen.clone();
        crate::store::sweep_every(SWEEP_EVERY, "DPoP proofs", move || {
            let sweeping = sweeping.clone();
            async move { sweeping.sweep().await }
        });
        seen
    }

    fn unswept(store: Store) -> Self {
        let now = store.now_secs_sql();
        Self {
            record: format!(
                "INSERT INTO dpop_proofs (proof_key, expires_at) SELECT $1, $2 \
                 WHERE $2 >= {now} ON CONFLICT (proof_key) DO NOTHING RETURNING 1"
            ),
            sweep: format!("DELETE FROM dpop_proofs WHERE expires_at < {now}"),
            now: format!("SELECT {now}"),
            store,
        }
    }

    /// The statement that records `key` until `expires_at` (Unix seconds), if that has not
    /// passed on the database's clock: it changes one row on a proof's first use, none after.
    /// A request's own transaction runs it ([`ctr_store::Prelude`]).
    pub(crate) fn record(&self, key: &str, expires_at: i64) -> ctr_store::Query {
        query(self.record.clone())
            .bind(key.to_owned())
            .bind(expires_at)
    }

    /// Records `key` until `expires_at` (Unix seconds) on its own, if that has not passed on
    /// the database's clock.
    pub(crate) async fn first_use(
        &self,
        key: &str,
        expires_at: i64,
    ) -> Result<ProofUse, StoreError> {
        if self.store.execute(self.record(key, expires_at)).await? == 1 {
            return Ok(ProofUse::First);
        }
        self.refusal(expires_at).await
    }

    /// Why a proof until `expires_at` was not recorded: a replay, or a proof this replica's
    /// clock still thought fresh.
    pub(crate) async fn refusal(&self, expires_at: i64) -> Result<ProofUse, StoreError> {
        let (now,): (i64,) = self.store.fetch_one(query_as(self.now.clone())).await?;
        Ok(if expires_at < now {
            ProofUse::Expired
        } else {
            ProofUse::Replayed
        })
    }

    /// Deletes the proofs whose window has closed on the database's clock; answers how many.
    pub(crate) async fn sweep(&self) -> Result<u64, StoreError> {
        self.store.execute(query(self.sweep.clone())).await
    }
}

/// Seconds since the epoch on this process's clock: for a proof's `iat` window, which the
/// store then checks again on the database's clock.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn seen() -> SeenProofs {
        SeenProofs::unswept(Store::open("sqlite::memory:", MIGRATIONS).await.unwrap())
    }

    async fn database_now(seen: &SeenProofs) -> i64 {
        let (now,): (i64,) = seen
            .store
            .fetch_one(query_as(seen.now.clone()))
            .await
            .unwrap();
        now
    }

    #[tokio::test]
    async fn a_proof_whose_window_closed_on_the_database_clock_is_refused_whatever_this_replica_says()
     {
        let seen = seen().await;
        let now = database_now(&seen).await;
        // A replica whose clock runs a minute behind still thinks this proof fresh.
        assert_eq!(
            seen.first_use("late", now - 1).await.unwrap(),
            ProofUse::Expired
        );
        assert_eq!(
            seen.first_use("fresh", now + 60).await.unwrap(),
            ProofUse::First
        );
        assert_eq!(
            seen.first_use("fresh", now + 60).await.unwrap(),
            ProofUse::Replayed
        );
    }

    #[tokio::test]
    async fn the_sweep_frees_only_what_closed_on_the_database_clock() {
        let seen = seen().await;
        let now = database_now(&seen).await;
        assert_eq!(
            seen.first_use("open", now + 60).await.unwrap(),
            ProofUse::First
        );
        // A row whose window closed (written while it was open).
        seen.store
            .execute(
                query("INSERT INTO dpop_proofs (proof_key, expires_at) VALUES ($1, $2)")
                    .bind("closed")
                    .bind(now - 5),
            )
            .await
            .unwrap();
        assert_eq!(seen.sweep().await.unwrap(), 1, "only the closed one");
        assert_eq!(
            seen.first_use("open", now + 60).await.unwrap(),
            ProofUse::Replayed,
            "still remembered while any replica may accept it"
        );
    }
}
