//! OrderProcessing, the relay: order sessions, checkout with envelope verification, capability
//! routing over mTLS, compensation. It holds public keys only: this crate does not link the
//! KMS, so it cannot mint a token, and it never reads `constraints`.

mod checkout;
mod domains;
pub mod faults;
mod metrics;
mod orders;
mod routes;
mod saga;
mod settings;
mod settlement;
mod store;
mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;

use ctr_pki::{IdentityFiles, TlsFiles};
use ctr_service_kit::{
    App, ClientAuth, Config, ConfigError, CustomerAuth, CustomerRate, Health, IdempotencyKeys,
    Metrics, ServerConfig, Service, StartError, https_client_following, open_store,
    watch_certificates,
};
use ctr_token::{CachePolicy, Clock, KeySetCache, Verifier, VerifierPolicy, secs};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use checkout::{CheckoutOutcome, IssuerKeys, Relay};
pub use domains::{DomainClient, HttpJwks};
pub use metrics::RelayMetrics;
pub use orders::{Order, OrderStatus, TokenOutcome};
pub use routes::openapi;
pub use routes::router;
pub use settings::WebhookEndpoint;
pub use settings::{IssuerEntry, RelaySettings};
pub use settlement::SettlementError;
pub use store::{MIGRATIONS, OrderStore, StoreLimits};
pub use webhooks::Dispatcher;

pub const SERVICE: Service = Service {
    name: "order-processing",
    client_auth: ClientAuth::None,
};

/// The relay, ready to run, and its state for tests and tools.
pub struct RelayApp {
    pub app: App,
    pub relay: Arc<Relay>,
}

pub async fn build(
    config: &Config<RelaySettings>,
    clock: Arc<dyn Clock>,
) -> Result<RelayApp, StartError> {
    build_with(&config.server, &config.service, clock).await
}

pub async fn build_with(
    server: &ServerConfig,
    settings: &RelaySettings,
    clock: Arc<dyn Clock>,
) -> Result<RelayApp, StartError> {
    build_with_faults(server, settings, clock, None).await
}

/// As [`build_with`], with a hook at each of the saga's store operations: what the crash and
/// store-fault tests use.
pub async fn build_with_faults(
    server: &ServerConfig,
    settings: &RelaySettings,
    clock: Arc<dyn Clock>,
    faults: Option<Arc<dyn faults::SagaFaults>>,
) -> Result<RelayApp, StartError> {
    if settings.checkout_deadline >= server.request_timeout {
        return Err(ConfigError::Setting {
            setting: "CTR_CHECKOUT_DEADLINE",
            reason: format!(
                "{:?} must be shorter than CTR_REQUEST_TIMEOUT ({:?}): a checkout answers 202 at its deadline, never a timeout while its saga runs",
                settings.checkout_deadline, server.request_timeout
            ),
        }
        .into());
    }
    let identity = IdentityFiles {
        cert: settings.client_cert.clone(),
        key: settings.client_key.clone(),
    };
    // The client certificate it presents to the domains, and the root it trusts them by,
    // reloaded as they renew (watched below, once the health and metrics exist).
    let tls = TlsFiles::load(&server.tls_root, Some(&identity))?;
    let client = https_client_following(&tls, settings.call_timeout)?;
    let cache_policy = CachePolicy {
        max_age: settings.jwks_max_age,
        min_refetch_interval: settings.jwks_min_refetch,
    };
    let mut policy = VerifierPolicy::new("order-processing");
    policy.leeway = settings.token_leeway;
    policy.max_lifetime = settings.max_token_lifetime;
    let mut keys: IssuerKeys = HashMap::new();
    let health = Health::default();
    for (name, entry) in &settings.issuers {
        let capabilities: Vec<&str> = entry.capabilities.iter().map(String::as_str).collect();
        policy = policy.issuer(name.clone(), &capabilities);
        let fetcher = HttpJwks {
            client: client.clone(),
            url: entry.jwks_url.clone(),
        };
        let cache = Arc::new(KeySetCache::new(fetcher, cache_policy, clock.clone()));
        let probe = cache.clone();
        health.register(format!("jwks:{name}"), move || {
            let status = probe.status();
            match (status.loaded, status.last_error) {
                (true, None) => Ok(format!("{} keys", status.keys)),
                (true, Some(error)) => Ok(format!(
                    "{} cached keys; last refresh failed: {error}",
                    status.keys
                )),
                (false, error) => Err(error.unwrap_or_else(|| "not fetched yet".into())),
            }
        });
        keys.insert(name.clone(), cache);
    }
    warm_up(&keys);
    // Before the store: a missing or bad CTR_AUTH_* stops the relay first.
    let customers = CustomerAuth::from_config(server, &health)?;
    let store = open_store(server, store::MIGRATIONS, &health).await?;
    customers.remember_proofs_in(&store);
    let metrics = Metrics::default();
    watch_certificates("client", &tls, server, &health, &metrics);
    let endpoints: Vec<String> = settings.webhooks.keys().cloned().collect();
    let orders = OrderStore::new(
        store.clone(),
        StoreLimits {
            capacity: settings.max_orders,
            per_customer: settings.max_open_orders_per_customer,
            retention: secs(settings.order_retention),
            lease_ms: i64::try_from(settings.saga_lease.as_millis()).unwrap_or(i64::MAX),
        },
        faults,
    )
    .with_webhooks(endpoints.clone());
    let webhooks = Arc::new(Dispatcher::new(
        settings,
        store::Deliveries::new(store.clone(), &endpoints),
        &server.tls_root,
        metrics::WebhookMetrics::register(&metrics, &endpoints),
        clock.clone(),
        orders.events_written(),
    )?);
    let relay = Arc::new(Relay {
        metrics: RelayMetrics::register(&metrics),
        settings: settings.clone(),
        unbound_tokens: customers.allows_bearer(),
        verifier: Verifier::new(policy, keys, clock.clone()),
        keys: IdempotencyKeys::new(store, server),
        orders,
        webhooks,
        domains: DomainClient {
            client,
            retries: settings.call_retries,
        },
        clock,
        rate: CustomerRate::new(server),
        sagas: TaskTracker::new(),
        stopping: CancellationToken::new(),
        recovery_slots: Arc::new(Semaphore::new(settings.recovery_concurrency)),
        compensation_slots: Arc::new(Semaphore::new(settings.recovery_concurrency)),
    });
    relay.spawn_workers(settings.recovery_interval);
    relay.webhooks.spawn(relay.stopping.clone());
    let app = App::build_with_admin(
        SERVICE,
        server,
        router(relay.clone(), &customers),
        routes::admin_router(relay.clone()),
        health,
        metrics,
    )
    .await?;
    // At SIGTERM (or the admin's shutdown) the relay stops admitting and claiming checkouts
    // at once, and the process waits for its running sagas up to CTR_SAGA_GRACE.
    let shutdown = app.shutdown_token();
    let draining = relay.clone();
    let grace = settings.saga_grace;
    let drained = tokio::spawn(async move {
        shutdown.cancelled().await;
        draining.drain(grace).await;
    });
    let app = app.on_drain(async move {
        let _ = drained.await;
    });
    Ok(RelayApp { app, relay })
}

/// Fetches every issuer's JWKS in the background until each has been loaded once.
fn warm_up(keys: &IssuerKeys) {
    for cache in keys.values() {
        let cache = cache.clone();
        tokio::spawn(async move {
            while !cache.status().loaded {
                cache.refresh().await;
                if !cache.status().loaded {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        });
    }
}
