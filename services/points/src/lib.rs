//! The points domain: holds a customer's points for an order, deducts them for the relay and
//! refunds them on cancellation. Built on the domain kit.

mod ledger;
mod settings;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use ctr_domain_kit::{CustomerId, DomainApp, SharedState};
use ctr_service_kit::openapi::{Endpoint, Method, Param};
use ctr_service_kit::{ApiError, ApiJson, Config, Customer, ServerConfig, StartError, scopes};
use ctr_token::Clock;

pub use ledger::{Balance, MAX_POINTS, Points, PointsHold, Seed};
pub use settings::PointsSettings;

/// The built-in demo balances (guide: Customers and access tokens, "Demo data").
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
    ctr_domain_kit::build(
        server,
        &settings.domain,
        ledger,
        clock,
        read_routes,
        &openapi(),
    )
    .await
}

/// A customer's points (`GET /service/v1/points/{customer_id}`).
#[derive(serde::Serialize, utoipa::ToSchema)]
struct BalanceView {
    customer_id: CustomerId,
    /// Points that may be held.
    available: u64,
    /// Points held by unexpired confirmations.
    held: u64,
    /// Points redeemed in checkouts.
    spent: u64,
}

/// The public API's OpenAPI document (served at `/service/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    ctr_domain_kit::openapi::<Points>(|doc| {
        let view = doc.schema::<BalanceView>();
        let customer = doc.schema::<CustomerId>();
        doc.customer_endpoint(
            Endpoint {
                method: Method::Get,
                path: "/service/v1/points/{customer_id}".into(),
                operation_id: "balance".into(),
                summary: "A customer's points",
                description: "Available, held and spent points: the customer's own only (another \
                          customer's answers 404).",
                params: vec![Param::new("customer_id", "The customer", customer)],
                request: None,
                success: (200, "The balance", view),
                problems: vec![
                    (404, vec!["customer-not-found"]),
                    (422, vec!["invalid-customer-id"]),
                ],
            },
            scopes::POINTS_READ,
        );
    })
}

fn no_account() -> ApiError {
    ApiError::not_found("customer-not-found", "the customer has no points account")
}

fn read_routes(state: SharedState<Points>) -> Router {
    Router::new()
        .route("/service/v1/points/{customer_id}", get(balance))
        .with_state(state)
}

/// The customer's own points; another customer's balance answers 404, as if it had none.
async fn balance(
    caller: Customer,
    State(state): State<SharedState<Points>>,
    Path(customer): Path<String>,
) -> Result<ApiJson<BalanceView>, ApiError> {
    let caller = caller.scoped(scopes::POINTS_READ)?;
    let customer = CustomerId::parse(&customer)?;
    if &customer != caller.id() {
        return Err(no_account());
    }
    state.engine.sweep().await?;
    let owner = customer.clone();
    let balance = state
        .engine
        .transact(move |tx, points| Box::pin(async move { points.balance(tx, &owner).await }))
        .await?
        .ok_or_else(no_account)?;
    Ok(ApiJson(BalanceView {
        customer_id: customer,
        available: balance.available,
        held: balance.held,
        spent: balance.spent,
    }))
}
