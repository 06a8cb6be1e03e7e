//! The coupons domain: confirms a coupon for an order, holds one use of it, redeems it for the
//! relay and gives it back on cancellation. Built on the domain kit.

mod ledger;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use ctr_domain_kit::CustomerId;
use ctr_domain_kit::{DomainApp, DomainSettings, SharedState, reference, rfc3339};
use ctr_money::Money;
use ctr_service_kit::openapi::{Endpoint, Method, Param};
use ctr_service_kit::{ApiError, ApiJson, Config, ServerConfig, StartError};
use ctr_token::Clock;

pub use ledger::{Coupon, CouponHold, Coupons, Discount, Seed};

/// The built-in demo coupons (guide: Customers and access tokens, "Demo data").
pub const BUILTIN_SEED: &str = include_str!("../../../deployments/seed/coupons.json");

pub async fn build(
    config: &Config<DomainSettings>,
    clock: Arc<dyn Clock>,
) -> Result<DomainApp<Coupons>, StartError> {
    build_with(&config.server, &config.service, clock).await
}

pub async fn build_with(
    server: &ServerConfig,
    settings: &DomainSettings,
    clock: Arc<dyn Clock>,
) -> Result<DomainApp<Coupons>, StartError> {
    let ledger = Coupons::from_seed(settings.seed(BUILTIN_SEED)?).map_err(StartError::Service)?;
    let now = clock.clone();
    ctr_domain_kit::build(
        server,
        settings,
        ledger,
        clock,
        move |state| read_routes(state, now),
        &openapi(),
    )
    .await
}

/// A coupon as `GET /service/v1/coupons/{code}` shows it.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct CouponView {
    code: String,
    /// `active`, `not-yet-valid`, `expired` or `exhausted`.
    status: &'static str,
    discount: Discount,
    min_total: Money,
    uses: u32,
    max_uses: u32,
    /// Uses held by unexpired confirmations.
    reserved: u32,
    valid_until: String,
    /// Only this customer may use it.
    customer_id: Option<CustomerId>,
}

/// The public API's OpenAPI document (served at `/service/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    ctr_domain_kit::openapi::<Coupons>(|doc| {
        let view = doc.schema::<CouponView>();
        doc.endpoint(Endpoint {
            method: Method::Get,
            path: "/service/v1/coupons/{code}".into(),
            operation_id: "coupon".into(),
            summary: "A coupon",
            description: "The coupon's discount, rules and uses.",
            params: vec![Param::new(
                "code",
                "The coupon code",
                ctr_service_kit::openapi::reference(),
            )],
            request: None,
            success: (200, "The coupon", view),
            problems: vec![
                (404, vec!["coupon-not-found"]),
                (422, vec!["invalid-request"]),
            ],
        });
    })
}

fn read_routes(state: SharedState<Coupons>, clock: Arc<dyn Clock>) -> Router {
    Router::new()
        .route("/service/v1/coupons/{code}", get(coupon))
        .with_state((state, clock))
}

async fn coupon(
    State((state, clock)): State<(SharedState<Coupons>, Arc<dyn Clock>)>,
    Path(code): Path<String>,
) -> Result<ApiJson<CouponView>, ApiError> {
    let code = reference("coupon_code", &code)?;
    let now = clock.now_secs();
    state.engine.sweep().await?;
    let c = state
        .engine
        .transact(move |tx, coupons| Box::pin(async move { coupons.get(tx, &code).await }))
        .await?
        .ok_or_else(|| ApiError::not_found("coupon-not-found", "no coupon has this code"))?;
    Ok(ApiJson(CouponView {
        status: c.status(now),
        discount: c.discount,
        min_total: c.min_total,
        uses: c.uses,
        max_uses: c.max_uses,
        reserved: c.reserved,
        valid_until: rfc3339(c.valid_until.unix_timestamp()),
        customer_id: c.customer_id,
        code: c.code,
    }))
}
