//! The routes every domain shares; thin handlers over [`Engine`] and [`Signer`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use ctr_relay_api::{CancelRequest, HoldReply, RedeemRequest};
use ctr_service_kit::{ApiError, ApiJson, Customer, CustomerRate, RelayCaller};
use ctr_token::{Settlement, UnverifiedToken};
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
    /// Each customer's rate of confirmations (each costs a signature and holds something).
    pub rate: CustomerRate,
}

pub type SharedState<L> = Arc<DomainState<L>>;

#[derive(Deserialize)]
pub struct ConfirmationRequest<R> {
    order_processing_id: String,
    /// Optional: the customer is the access token's; if named, it must be that one.
    #[serde(default)]
    customer_id: Option<String>,
    #[serde(flatten)]
    details: R,
}

/// The domain's summary of a hold, beside the contract's common fields.
#[derive(Serialize)]
struct HoldDetails<'a, H> {
    hold_expires_at: String,
    /// `settles` and, for a discount, `priced_on`: what the token signs.
    #[serde(flatten)]
    settlement: Settlement,
    #[serde(flatten)]
    hold: &'a H,
}

fn hold_reply<L: Ledger>(
    record: &HoldRecord<L::Hold>,
    replayed: Option<bool>,
) -> HoldReply<HoldDetails<'_, L::Hold>> {
    HoldReply {
        jti: record.jti,
        status: L::state_name(record.state).to_owned(),
        order_processing_id: record.order_processing_id.as_str().to_owned(),
        customer_id: record.customer_id.as_str().to_owned(),
        replayed,
        details: HoldDetails {
            hold_expires_at: rfc3339(record.expires_at),
            settlement: L::settlement(&record.hold),
            hold: &record.hold,
        },
    }
}

/// The hold as every endpoint answers it; `replayed` only after a redemption.
pub fn hold_view<L: Ledger>(
    record: &HoldRecord<L::Hold>,
    replayed: Option<bool>,
) -> Result<Value, ApiError> {
    serde_json::to_value(hold_reply::<L>(record, replayed)).map_err(ApiError::internal)
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

/// A confirmation: the customer is the access token's subject, never the body's.
async fn confirm<L: Ledger>(
    customer: Customer,
    State(state): State<SharedState<L>>,
    ApiJson(request): ApiJson<ConfirmationRequest<L::Request>>,
) -> Result<(StatusCode, ApiJson<Value>), ApiError> {
    let customer = customer.scoped(L::CONFIRM_SCOPE)?;
    let named = request
        .customer_id
        .as_deref()
        .map(CustomerId::parse)
        .transpose()?;
    customer.is(named.as_ref())?;
    let order = OrderProcessingId::parse(&request.order_processing_id)?;
    let key = customer.key_thumbprint().map(str::to_owned);
    let customer = customer.id().clone();
    state.rate.check(&customer)?;
    let record = state
        .engine
        .hold(&order, &customer, request.details)
        .await?;
    let issued = sign_and_seal(
        state.clone(),
        Sealing {
            jti: record.jti,
            customer,
            key,
            order: order.clone(),
            settlement: L::settlement(&record.hold),
            constraints: L::constraints(&record.hold),
        },
    )
    .await?;
    tracing::info!(domain = L::DOMAIN, jti = %record.jti, order_processing_id = %order, "confirmed and held");
    let mut body = hold_view::<L>(&record, None)?;
    if let Value::Object(map) = &mut body {
        map.insert("token".into(), issued.token.into());
        map.insert("expires_at".into(), rfc3339(issued.expires_at).into());
        map.insert("capability".into(), L::CAPABILITY.into());
    }
    Ok((StatusCode::CREATED, ApiJson(body)))
}

/// What the token of a hold just placed is signed with.
struct Sealing {
    jti: Uuid,
    customer: CustomerId,
    /// The thumbprint of the customer's DPoP key, for `cnf.jkt`.
    key: Option<String>,
    order: OrderProcessingId,
    settlement: Settlement,
    constraints: Value,
}

/// Signs the token of a hold just placed and seals the hold with its hash, on a task of its
/// own: a request dropped meanwhile (its client gone, the request timeout) cannot leave the
/// hold held and unsealed. A hold whose token could not be signed or sealed is given back, and
/// so is one whose token nobody waits for any more (it never left this process).
async fn sign_and_seal<L: Ledger>(
    state: SharedState<L>,
    sealing: Sealing,
) -> Result<crate::IssuedToken, ApiError> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let jti = sealing.jti;
        let issued = state
            .signer
            .issue(
                jti,
                sealing.customer.as_str(),
                sealing.key.as_deref(),
                sealing.order.as_str(),
                sealing.settlement,
                &sealing.constraints,
            )
            .await;
        let sealed = match issued {
            Ok(issued) => state
                .engine
                .seal(jti, ctr_token::sha256_hex(&issued.token))
                .await
                .map(|()| issued),
            Err(error) => Err(error),
        };
        let sealed = match sealed {
            Ok(issued) => Ok(issued),
            // No token for this hold: it is given back before the caller hears of it.
            Err(error) => Err(state
                .engine
                .discard(jti)
                .await
                .map_or_else(|e| e, |()| error)),
        };
        let token_made = sealed.is_ok();
        if answer.send(sealed).is_err() && token_made {
            tracing::info!(domain = L::DOMAIN, %jti, "the confirmation's request was dropped before its token was answered: the hold is given back");
            if let Err(error) = state.engine.discard(jti).await {
                tracing::error!(domain = L::DOMAIN, %jti, %error, "a hold whose token was never delivered could not be given back: it expires by itself");
            }
        }
    });
    answered.await.unwrap_or_else(|_| {
        Err(ApiError::internal(
            "the signing task ended without an answer",
        ))
    })
}

async fn redeem<L: Ledger>(
    _caller: RelayCaller,
    State(state): State<SharedState<L>>,
    ApiJson(request): ApiJson<RedeemRequest>,
) -> Result<ApiJson<Value>, ApiError> {
    let order = OrderProcessingId::parse(&request.order_processing_id)?;
    let customer = CustomerId::parse(&request.customer_id)?;
    // The token's form is checked and its `jti` read; what vouches for it is that it hashes
    // to what was sealed with the hold when this domain issued it.
    let jti = UnverifiedToken::parse(&request.token)
        .map_err(|error| token_problem(&error))?
        .jti();
    let redemption = state
        .engine
        .redeem(
            jti,
            ctr_token::sha256_hex(&request.token),
            &order,
            &customer,
        )
        .await?;
    tracing::info!(domain = L::DOMAIN, %jti, order_processing_id = %order, replayed = redemption.replayed, "redeemed");
    hold_view::<L>(&redemption.record, Some(redemption.replayed)).map(ApiJson)
}

async fn cancel<L: Ledger>(
    _caller: RelayCaller,
    State(state): State<SharedState<L>>,
    ApiJson(request): ApiJson<CancelRequest>,
) -> Result<ApiJson<Value>, ApiError> {
    let order = OrderProcessingId::parse(&request.order_processing_id)?;
    let record = state.engine.cancel(request.jti, &order).await?;
    tracing::info!(domain = L::DOMAIN, jti = %request.jti, order_processing_id = %order, reason = ?request.reason, status = L::state_name(record.state), "cancelled");
    hold_view::<L>(&record, None).map(ApiJson)
}

/// One of the customer's holds; another customer's answers 404, as if it did not exist.
async fn hold<L: Ledger>(
    customer: Customer,
    State(state): State<SharedState<L>>,
    Path(jti): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let customer = customer.scoped(L::READ_SCOPE)?;
    let jti = Uuid::try_parse(&jti)
        .map_err(|_| ApiError::invalid("invalid-jti", "the path must end in a UUID"))?;
    let record = state
        .engine
        .get(jti)
        .await?
        .filter(|record| &record.customer_id == customer.id())
        .ok_or_else(|| ApiError::not_found("hold-not-found", "no hold for this jti"))?;
    hold_view::<L>(&record, None).map(ApiJson)
}

async fn jwks<L: Ledger>(
    State(state): State<SharedState<L>>,
) -> Result<ApiJson<ctr_token::JwkSet>, ApiError> {
    Ok(ApiJson(state.signer.jwks().await?))
}
