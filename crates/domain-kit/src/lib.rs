//! The issuing domain's half of the confirmed capability token relay: a domain supplies its
//! [`Ledger`] (resources and rules); this crate holds, signs, redeems once, cancels, expires and
//! publishes the JWKS, over the service kit.

mod engine;
mod issue;
pub mod keys;
mod ledger;
mod openapi;
mod routes;
mod settings;
mod signer;

use std::sync::Arc;

use axum::Router;
use ctr_kms::{KmsConfig, Seed};
use ctr_service_kit::{
    App, ClientAuth, CustomerAuth, CustomerRate, Health, Metrics, ServerConfig, Service,
    StartError, open_store,
};
use ctr_token::Clock;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::AtomicI64;

pub use ctr_service_kit::{CustomerId, OrderProcessingId, reference, rfc3339};
pub use engine::{Engine, Held, HoldRecord, HoldState, Redemption, TakeKey};
pub use issue::{IssueError, IssuedToken, IssuerConfig, TokenIssuer, der_to_raw};
pub use ledger::{Ledger, from_sql, to_sql};
pub use openapi::openapi;
pub use routes::{DomainState, SharedState, hold_view, routes};
pub use settings::DomainSettings;
pub use signer::{AUDIENCE, Signer, token_problem};

/// What every domain's `main` does: the service kit's commands (`serve`, `healthcheck`,
/// `admin`), and `keys` for its signing key in the KMS ([`keys`]).
pub fn main<S, F, Fut>(name: &'static str, defaults: S, start: F) -> std::process::ExitCode
where
    S: ctr_service_kit::ServiceSettings + AsRef<DomainSettings>,
    F: FnOnce(ctr_service_kit::Config<S>) -> Fut,
    Fut: std::future::Future<Output = Result<App, StartError>>,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("keys") {
        return keys::main(name, defaults, &args[1..]);
    }
    ctr_service_kit::main_with(name, defaults, start)
}

/// A domain service ready to run, with handles tests and tools need.
pub struct DomainApp<L: Ledger> {
    pub app: App,
    pub state: SharedState<L>,
}

/// How often expired holds are given back and old ones forgotten, besides on every read.
const JANITOR_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Builds domain `L`: its store (migrated, seeded when empty), its signing key in the KMS,
/// its engine and janitor, the shared routes plus `extra` (the domain's read endpoints), the
/// readiness checks, both listeners.
pub async fn build<L: Ledger>(
    server: &ServerConfig,
    settings: &DomainSettings,
    ledger: L,
    clock: Arc<dyn Clock>,
    extra: impl FnOnce(SharedState<L>) -> Router,
    doc: &utoipa::openapi::OpenApi,
) -> Result<DomainApp<L>, StartError> {
    let health = Health::default();
    // First: a missing or bad CTR_AUTH_* stops the service before it touches its store.
    let customers = CustomerAuth::from_config(server, &health)?;
    let mut migrations = engine::MIGRATIONS.to_vec();
    migrations.extend_from_slice(L::MIGRATIONS);
    let store = open_store(server, &migrations, &health).await?;
    customers.remember_proofs_in(&store);
    let ledger = Arc::new(ledger);
    let seeding = ledger.clone();
    store
        .transact(move |tx| Box::pin(async move { seeding.seed(tx).await }))
        .await
        .map_err(|e| StartError::Store(format!("the seed data could not be loaded: {e}")))?;
    let kms_config = settings.kms_backend()?;
    let kms = kms(kms_config, &store).await?;
    let signer = Signer::new(
        L::DOMAIN,
        L::CAPABILITY,
        kms,
        kms_config.backend(),
        settings.token_ttl,
        clock.clone(),
    )
    .await
    .map_err(StartError::Service)?;
    let state = Arc::new(DomainState {
        keys: ctr_service_kit::IdempotencyKeys::new(store.clone(), server),
        engine: Engine::new(ledger, store, clock, settings),
        signer,
        rate: CustomerRate::new(server),
    });
    let metrics = Metrics::default();
    let holds_open = Gauge::<i64, AtomicI64>::default();
    metrics.register(
        "holds_open",
        "Holds placed and not yet redeemed, cancelled or expired (counted by the janitor every 2 s)",
        holds_open.clone(),
    );
    metrics.register(
        "kms_signature_duration_seconds",
        "How long the KMS took to sign a confirmation's token, by backend and outcome (signed, failed)",
        state.signer.latency().clone(),
    );
    let janitor = Arc::downgrade(&state);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(JANITOR_INTERVAL).await;
            let Some(state) = janitor.upgrade() else {
                return;
            };
            if let Err(error) = state.engine.sweep().await {
                tracing::warn!(domain = L::DOMAIN, %error, "sweep failed");
            }
            match state.engine.open_holds().await {
                Ok(open) => {
                    holds_open.set(open);
                }
                Err(error) => {
                    tracing::warn!(domain = L::DOMAIN, %error, "holds could not be counted")
                }
            }
        }
    });
    let (signing, backend) = (Arc::downgrade(&state), kms_config.backend());
    health.register("kms", move || match signing.upgrade() {
        Some(state) if state.signer.ready() => Ok(format!(
            "{} signs through the {backend} KMS",
            state.signer.key_id()
        )),
        Some(state) => Err(format!(
            "the {backend} KMS has not signed with {} yet",
            state.signer.key_id()
        )),
        None => Err("stopped".into()),
    });
    let router = customers
        .protect(routes(state.clone()).merge(extra(state.clone())))
        .merge(ctr_service_kit::openapi::routes(doc));
    let service = Service {
        name: L::DOMAIN,
        client_auth: ClientAuth::Optional,
    };
    let app = App::build(service, server, router, health, metrics).await?;
    Ok(DomainApp { app, state })
}

/// The configured KMS. A mock without a configured seed takes the seed kept in the store
/// (drawn at random the first time), so its keys survive restarts and agree across replicas;
/// it says at start that it is not for production.
async fn kms(
    config: &KmsConfig,
    store: &ctr_store::Store,
) -> Result<Arc<dyn ctr_kms::Kms>, StartError> {
    use ctr_store::{query, query_as};
    let invalid = |e: ctr_kms::KmsError| StartError::Service(format!("CTR_KMS__*: {e}"));
    if matches!(config, KmsConfig::Mock { .. }) {
        tracing::warn!(
            "the mock KMS keeps this domain's signing key material in process and in its store: for development only, never production (set CTR_KMS__BACKEND=vault)"
        );
    }
    match config {
        KmsConfig::Mock { seed: None } => {
            let seed = async {
                let mut drawn = [0_u8; 32];
                rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut drawn);
                let drawn: String = drawn.iter().map(|b| format!("{b:02x}")).collect();
                store
                    .execute(
                        query(
                            "INSERT INTO mock_kms_seed (id, seed) VALUES (1, $1) \
                             ON CONFLICT (id) DO NOTHING",
                        )
                        .bind(drawn),
                    )
                    .await?;
                let (seed,): (String,) = store
                    .fetch_one(query_as("SELECT seed FROM mock_kms_seed WHERE id = 1"))
                    .await?;
                Ok::<_, ctr_store::StoreError>(seed)
            }
            .await
            .map_err(|e| StartError::Store(format!("the mock KMS seed: {e}")))?;
            KmsConfig::Mock {
                seed: Some(Seed::new(seed)),
            }
            .build()
            .await
            .map_err(invalid)
        }
        other => other.build().await.map_err(invalid),
    }
}
