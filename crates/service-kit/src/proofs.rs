//! The DPoP replay cache: every proof a service accepts is written to its store, so that the
//! same proof is refused at any replica. The rows outlive a proof's acceptance window only
//! until the next sweep.

use std::time::Duration;

use ctr_store::{Migration, Store, StoreError, query};

/// The service kit's tables, applied with every service's own.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 900,
    name: "dpop proofs",
    sql: include_str!("../migrations/0900_dpop_proofs.sql"),
}];

/// How often expired entries are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The proofs seen, in the service's store.
#[derive(Clone)]
pub(crate) struct SeenProofs {
    store: Store,
}

impl SeenProofs {
    /// The cache in `store`, swept in the background while the store is open.
    pub(crate) fn new(store: Store) -> Self {
        let sweeping = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let statement =
                    query("DELETE FROM dpop_proofs WHERE expires_at < $1").bind(now_secs());
                match sweeping.execute(statement).await {
                    Ok(_) => {}
                    Err(StoreError::Closed) => return,
                    Err(error) => tracing::warn!(%error, "expired DPoP proofs not swept"),
                }
            }
        });
        Self { store }
    }

    /// Records `key` until `expires_at`; `false` when it was recorded before (a replay).
    pub(crate) async fn first_use(&self, key: &str, expires_at: i64) -> Result<bool, StoreError> {
        let statement = query(
            "INSERT INTO dpop_proofs (proof_key, expires_at) VALUES ($1, $2) \
             ON CONFLICT (proof_key) DO NOTHING",
        )
        .bind(key.to_owned())
        .bind(expires_at);
        Ok(self.store.execute(statement).await? == 1)
    }
}

/// Seconds since the epoch.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
