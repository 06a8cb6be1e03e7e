//! The service's store: opened from `CTR_STORE_URL` at start, watched by the readiness probe,
//! and every failure of it answered as 503 `store-unavailable` (the cause is logged).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use ctr_store::{Migration, Store, StoreError};

use crate::{ApiError, Health, ServerConfig, StartError};

/// Opens the store named by `CTR_STORE_URL` and migrates it; registers the `store` readiness
/// check, kept current by a probe every few seconds. A PostgreSQL server that cannot be
/// reached yet is retried with backoff (the service does not listen, so its health check
/// fails, until it answers); a schema from a newer binary, a file that is not a database or an
/// SQLite file that cannot be opened stops the service at once.
pub async fn open_store(
    server: &ServerConfig,
    migrations: &[Migration],
    health: &Health,
) -> Result<Store, StartError> {
    let migrations = with_kit_migrations(migrations);
    let mut backoff = Duration::from_millis(250);
    let store = loop {
        match Store::open(&server.store_url, &migrations).await {
            Ok(store) => break store,
            Err(error @ StoreError::Open { .. }) if server.store_url.starts_with("postgres") => {
                tracing::warn!(%error, retry_in = ?backoff, "the store is unreachable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(StartError::Store(error.to_string())),
        }
    };
    let up = Arc::new(AtomicBool::new(true));
    let probe = (store.clone(), up.clone());
    tokio::spawn(async move {
        let (store, up) = probe;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let ok = store.ping().await.is_ok();
            if up.swap(ok, Ordering::Relaxed) != ok {
                tracing::warn!(reachable = ok, "store reachability changed");
            }
        }
    });
    health.register("store", move || {
        if up.load(Ordering::Relaxed) {
            Ok("reachable".into())
        } else {
            Err("the store does not answer".into())
        }
    });
    Ok(store)
}

/// Runs `sweep` every `period` while the store is open: the deletion of a table's expired
/// rows (`what` names them in the warning a failed sweep logs).
pub(crate) fn sweep_every<F, Fut>(period: Duration, what: &'static str, sweep: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<u64, StoreError>> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            match sweep().await {
                Ok(_) => {}
                Err(StoreError::Closed) => return,
                Err(error) => tracing::warn!(%error, what, "expired rows not swept"),
            }
        }
    });
}

/// A service's migrations and the kit's own tables (the DPoP replay cache, idempotency keys):
/// what a service's store holds.
pub fn with_kit_migrations(service: &[Migration]) -> Vec<Migration> {
    [
        service,
        crate::proofs::MIGRATIONS,
        crate::idempotency::MIGRATIONS,
    ]
    .concat()
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if matches!(error, StoreError::PreludeRefused) {
            // A replayed DPoP proof: the request's answer becomes its refusal (`auth.rs`).
            tracing::info!(error = %error, "transaction refused by its prelude");
        } else {
            tracing::error!(error = %error, "store failure");
        }
        let detail = match error {
            StoreError::CommitUnknown(_) => {
                "the service's store did not confirm the change, which may have been made: read it back before retrying"
            }
            _ => "the service's store did not answer; nothing was changed, retry later",
        };
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "Store unavailable",
            detail,
        )
    }
}
