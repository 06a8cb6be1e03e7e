//! The payments domain: authorizes a payment for an order, captures it for the relay, voids or
//! refunds it on cancellation. Built on the domain kit.

mod ledger;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use ctr_domain_kit::{DomainApp, DomainSettings, SharedState};
use ctr_service_kit::openapi::{Endpoint, Method, Param};
use ctr_service_kit::{ApiError, ApiJson, Config, Customer, ServerConfig, StartError, scopes};
use ctr_token::Clock;
use serde_json::Value;

pub use ledger::{PaymentHold, PaymentMethod, Payments, Seed};

/// The built-in demo payment methods (guide: Customers and access tokens, "Demo data").
pub const BUILTIN_SEED: &str = include_str!("../../../deployments/seed/payments.json");

pub async fn build(
    config: &Config<DomainSettings>,
    clock: Arc<dyn Clock>,
) -> Result<DomainApp<Payments>, StartError> {
    build_with(&config.server, &config.service, clock).await
}

pub async fn build_with(
    server: &ServerConfig,
    settings: &DomainSettings,
    clock: Arc<dyn Clock>,
) -> Result<DomainApp<Payments>, StartError> {
    let ledger = Payments::from_seed(settings.seed(BUILTIN_SEED)?);
    ctr_domain_kit::build(server, settings, ledger, clock, read_routes, &openapi()).await
}

/// The public API's OpenAPI document (served at `/service/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    ctr_domain_kit::openapi::<Payments>(|doc| {
        let view = utoipa::openapi::Ref::from_schema_name("Hold").into();
        doc.customer_endpoint(Endpoint {
            method: Method::Get,
            path: "/service/v1/payments/{payment_id}".into(),
            operation_id: "payment".into(),
            summary: "A payment",
            description: "A payment is the hold its confirmation placed: `authorized`, `captured`, `voided` or `refunded`.",
            params: vec![Param::uuid("payment_id", "The confirmation's `jti`")],
            request: None,
            success: (200, "The payment", view),
            problems: vec![(404, vec!["payment-not-found"]), (422, vec!["invalid-payment-id"])],
        }, scopes::PAYMENTS_READ);
    })
}

/// `GET /service/v1/payments/{payment_id}`: a payment is the hold its confirmation placed.
fn read_routes(state: SharedState<Payments>) -> Router {
    Router::new()
        .route("/service/v1/payments/{payment_id}", get(payment))
        .with_state(state)
}

/// One of the customer's payments; another customer's answers 404.
async fn payment(
    customer: Customer,
    State(state): State<SharedState<Payments>>,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let customer = customer.scoped(scopes::PAYMENTS_READ)?;
    let jti = uuid::Uuid::try_parse(&id).map_err(|_| {
        ApiError::invalid(
            "invalid-payment-id",
            "a payment id is the confirmation's jti (a UUID)",
        )
    })?;
    let record = state
        .engine
        .get(jti)
        .await?
        .filter(|record| &record.customer_id == customer.id())
        .ok_or_else(|| ApiError::not_found("payment-not-found", "no payment for this jti"))?;
    ctr_domain_kit::hold_view::<Payments>(&record, None).map(ApiJson)
}
