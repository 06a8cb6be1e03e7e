//! The issuing domain's half of the confirmed capability token relay: a domain supplies its
//! [`Ledger`] (resources and rules); this crate holds, signs, redeems once, cancels, expires and
//! publishes the JWKS, over the service kit.

mod engine;
mod ledger;
mod routes;
mod settings;
mod signer;

use std::sync::Arc;

use axum::Router;
use ctr_service_kit::{App, ClientAuth, Health, Metrics, ServerConfig, Service, StartError};
use ctr_token::Clock;

pub use ctr_service_kit::{CustomerId, OrderProcessingId, reference, rfc3339};
pub use engine::{Engine, HoldRecord, HoldState, Redemption};
pub use ledger::Ledger;
pub use routes::{DomainState, SharedState, hold_view, routes};
pub use settings::DomainSettings;
pub use signer::{AUDIENCE, Signer, token_problem};

/// A domain service ready to run, with handles tests and tools need.
pub struct DomainApp<L: Ledger> {
    pub app: App,
    pub state: SharedState<L>,
}

/// Builds domain `L`: its signing key in the KMS, its engine, the shared routes plus
/// `extra` (the domain's read endpoints), the readiness check, both listeners.
pub async fn build<L: Ledger>(
    server: &ServerConfig,
    settings: &DomainSettings,
    ledger: L,
    clock: Arc<dyn Clock>,
    extra: impl FnOnce(SharedState<L>) -> Router,
) -> Result<DomainApp<L>, StartError> {
    let kms = settings.kms.build();
    let signer = Signer::new(
        L::DOMAIN,
        L::CAPABILITY,
        kms,
        settings.token_ttl,
        clock.clone(),
    )
    .await
    .map_err(StartError::Service)?;
    let state = Arc::new(DomainState {
        engine: Engine::new(ledger, clock, settings.hold_ttl, settings.hold_retention),
        signer,
    });
    let health = Health::default();
    let key_id = state.signer.key_id().to_owned();
    health.register("signing-key", move || Ok(format!("{key_id} in the KMS")));
    let router = routes(state.clone()).merge(extra(state.clone()));
    let service = Service {
        name: L::DOMAIN,
        client_auth: ClientAuth::Optional,
    };
    let app = App::build(service, server, router, health, Metrics::default()).await?;
    Ok(DomainApp { app, state })
}
