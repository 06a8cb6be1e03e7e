//! The points domain: holds a customer's points for an order, deducts them for the relay and
//! refunds them on cancellation. Built on the domain kit.

mod ledger;
mod settings;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use ctr_domain_kit::{CustomerId, DomainApp, SharedState};
use ctr_service_kit::{ApiError, ApiJson, Config, ServerConfig, StartError};
use ctr_token::Clock;
use serde_json::{Value, json};

pub use ledger::{Balance, MAX_POINTS, Points, PointsHold, Seed};
pub use settings::PointsSettings;

/// The built-in demo balances (README, "Demo data").
pub const BUILTIN_SEED: &str = include_str!("../../../deployments/seed/points.json");

pub async fn build(
    config: &Config<PointsSettings>,
    clock: Arc<dyn Clock>,
) -> Result<DomainApp<Points>, StartError> {
    build_with(&config.server, &config.service, clock).await
}

pub async fn build_with(
    server: &ServerConfig,
    settings: &PointsSettings,
    clock: Arc<dyn Clock>,
) -> Result<DomainApp<Points>, StartError> {
    let ledger = Points::new(
        settings.domain.seed(BUILTIN_SEED)?,
        settings.point_values()?,
    );
    ctr_domain_kit::build(server, &settings.domain, ledger, clock, read_routes).await
}

fn read_routes(state: SharedState<Points>) -> Router {
    Router::new()
        .route("/service/v1/points/{customer_id}", get(balance))
        .with_state(state)
}

async fn balance(
    State(state): State<SharedState<Points>>,
    Path(customer): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let customer = CustomerId::parse(&customer)?;
    state.engine.sweep().await?;
    let mut conn = state.engine.store().pool().acquire().await?;
    let balance = state
        .engine
        .ledger()
        .balance(&mut conn, &customer)
        .await?
        .ok_or_else(|| {
            ApiError::not_found("customer-not-found", "the customer has no points account")
        })?;
    Ok(ApiJson(
        json!({"customer_id": customer, "available": balance.available, "held": balance.held, "spent": balance.spent}),
    ))
}
