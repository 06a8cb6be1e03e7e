//! The routes every domain shares; thin handlers over [`Engine`] and [`Signer`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use ctr_service_kit::{ApiError, ApiJson, RelayCaller};
use ctr_token::Settlement;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    CustomerId, Engine, HoldRecord, Ledger, OrderProcessingId, Signer, rfc3339, token_problem,
};

/// What a domain's handlers share.
pub struct DomainState<L: Ledger> {
    pub engine: Engine<L>,
    pub signer: Signer,
}

pub type SharedState<L> = Arc<DomainState<L>>;

#[derive(Deserialize)]
pub struct ConfirmationRequest<R> {
    order_processing_id: String,
    customer_id: String,
    #[serde(flatten)]
    details: R,
}

#[derive(Serialize)]
struct HoldView<'a, H> {
    jti: Uuid,
    status: &'static str,
    order_processing_id: &'a OrderProcessingId,
    customer_id: &'a CustomerId,
    hold_expires_at: String,
    /// `settles` and, for a discount, `priced_on`: what the token signs.
    #[serde(flatten)]
    settlement: Settlement,
    #[serde(flatten)]
    hold: &'a H,
}

pub fn hold_view<L: Ledger>(record: &HoldRecord<L::Hold>) -> Value {
    let view = HoldView {
        jti: record.jti,
        status: L::state_name(record.state),
        order_processing_id: &record.order_processing_id,
        customer_id: &record.customer_id,
        hold_expires_at: rfc3339(record.expires_at),
        settlement: L::settlement(&record.hold),
        hold: &record.hold,
    };
    serde_json::to_value(view).unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedemptionRequest {
    token: String,
    order_processing_id: String,
    customer_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancellationRequest {
    jti: Uuid,
    order_processing_id: String,
    #[serde(default)]
    #[allow(dead_code, reason = "logged only")]
    reason: Option<String>,
}

pub fn routes<L: Ledger>(state: SharedState<L>) -> Router {
    let base = format!("/service/v1/{}", L::DOMAIN);
    Router::new()
        .route(&format!("{base}/confirmations"), post(confirm::<L>))
        .route(&format!("{base}/redemptions"), post(redeem::<L>))
        .route(&format!("{base}/cancellations"), post(cancel::<L>))
        .route(&format!("{base}/holds/{{jti}}"), get(hold::<L>))
        .route("/.well-known/jwks.json", get(jwks::<L>))
        .with_state(state)
}

async fn confirm<L: Ledger>(
    State(state): State<SharedState<L>>,
    ApiJson(request): ApiJson<ConfirmationRequest<L::Request>>,
) -> Result<(StatusCode, ApiJson<Value>), ApiError> {
    let order = OrderProcessingId::parse(&request.order_processing_id)?;
    let customer = CustomerId::parse(&request.customer_id)?;
    let record = state.engine.hold(&order, &customer, request.details)?;
    let issued = state
        .signer
        .issue(
            record.jti,
            customer.as_str(),
            order.as_str(),
            L::settlement(&record.hold),
            &L::constraints(&record.hold),
        )
        .await;
    let issued = match issued {
        Ok(issued) => issued,
        Err(error) => {
            state.engine.discard(record.jti);
            return Err(error);
        }
    };
    tracing::info!(domain = L::DOMAIN, jti = %record.jti, order_processing_id = %order, "confirmed and held");
    let mut body = hold_view::<L>(&record);
    if let Value::Object(map) = &mut body {
        map.insert("token".into(), issued.token.into());
        map.insert("expires_at".into(), rfc3339(issued.expires_at).into());
        map.insert("capability".into(), L::CAPABILITY.into());
    }
    Ok((StatusCode::CREATED, ApiJson(body)))
}

async fn redeem<L: Ledger>(
    _caller: RelayCaller,
    State(state): State<SharedState<L>>,
    ApiJson(request): ApiJson<RedemptionRequest>,
) -> Result<ApiJson<Value>, ApiError> {
    let order = OrderProcessingId::parse(&request.order_processing_id)?;
    let customer = CustomerId::parse(&request.customer_id)?;
    let verified = state
        .signer
        .verify(&request.token, order.as_str())
        .await
        .map_err(|e| token_problem(&e))?;
    let claims = verified.claims();
    if claims.sub != customer.as_str() {
        return Err(ApiError::conflict(
            "customer-mismatch",
            "the token was confirmed for another customer",
        ));
    }
    let redemption = state
        .engine
        .redeem(claims.jti, &order, &customer, &claims.settlement())?;
    tracing::info!(domain = L::DOMAIN, jti = %claims.jti, order_processing_id = %order, replayed = redemption.replayed, "redeemed");
    let mut body = hold_view::<L>(&redemption.record);
    if let Value::Object(map) = &mut body {
        map.insert("replayed".into(), redemption.replayed.into());
    }
    Ok(ApiJson(body))
}

async fn cancel<L: Ledger>(
    _caller: RelayCaller,
    State(state): State<SharedState<L>>,
    ApiJson(request): ApiJson<CancellationRequest>,
) -> Result<ApiJson<Value>, ApiError> {
    let order = OrderProcessingId::parse(&request.order_processing_id)?;
    let record = state.engine.cancel(request.jti, &order)?;
    tracing::info!(domain = L::DOMAIN, jti = %request.jti, order_processing_id = %order, status = L::state_name(record.state), "cancelled");
    Ok(ApiJson(hold_view::<L>(&record)))
}

async fn hold<L: Ledger>(
    State(state): State<SharedState<L>>,
    Path(jti): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let jti = Uuid::try_parse(&jti)
        .map_err(|_| ApiError::invalid("invalid-jti", "the path must end in a UUID"))?;
    let record = state
        .engine
        .get(jti)
        .ok_or_else(|| ApiError::not_found("hold-not-found", format!("no hold for jti {jti}")))?;
    Ok(ApiJson(hold_view::<L>(&record)))
}

async fn jwks<L: Ledger>(
    State(state): State<SharedState<L>>,
) -> Result<ApiJson<ctr_token::JwkSet>, ApiError> {
    Ok(ApiJson(state.signer.jwks().await?))
}
