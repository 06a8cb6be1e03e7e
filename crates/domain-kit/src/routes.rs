//! The routes every domain shares; thin handlers over [`Engine`] and [`Signer`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ctr_relay_api::{CancelRequest, HoldReply, RedeemRequest};
use ctr_service_kit::idempotency::{Answer, Scoped};
use ctr_service_kit::{
    ApiError, ApiJson, Customer, CustomerRate, IdempotencyKeys, Idempotent, RelayCaller,
};
use ctr_token::{Settlement, UnverifiedToken};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    CustomerId, Engine, Held, HoldRecord, Ledger, OrderProcessingId, Signer, TakeKey, rfc3339,
    token_problem,
};

/// The confirmation route's name in the scope of an idempotency key (each domain keeps its
/// own keys).
const CONFIRM: &str = "confirmations";

/// What a domain's handlers share.
pub struct DomainState<L: Ledger> {
    pub engine: Engine<L>,
    pub signer: Signer,
    /// Each customer's rate of confirmations (each costs a signature and holds something).
    pub rate: CustomerRate,
    /// The customers' idempotency keys, in the domain's store.
    pub keys: IdempotencyKeys,
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
    request: Idempotent<ConfirmationRequest<L::Request>>,
) -> Result<Response, ApiError> {
    let customer = customer.scoped(L::CONFIRM_SCOPE)?;
    let key = state.keys.scope(customer.id(), CONFIRM, request.key)?;
    let request = request.body;
    let named = request
        .customer_id
        .as_deref()
        .map(CustomerId::parse)
        .transpose()?;
    customer.is(named.as_ref())?;
    let order = OrderProcessingId::parse(&request.order_processing_id)?;
    let thumbprint = customer.key_thumbprint().map(str::to_owned);
    let customer = customer.id().clone();
    state.rate.check(&customer)?;
    let take: Option<TakeKey> = key.clone().map(|key| {
        let keys = state.keys.clone();
        Arc::new(move |jti: Uuid, until: i64| {
            keys.record(&key, &jti.to_string(), None, Some(until))
        }) as TakeKey
    });
    let record = match state
        .engine
        .hold(&order, &customer, request.details, take)
        .await?
    {
        Held::Placed(record) => record,
        Held::KeyTaken => {
            return match &key {
                Some(key) => state.keys.replay(key).await,
                None => Err(ApiError::internal("a key taken by a request that had none")),
            };
        }
    };
    let answer = sign_and_seal(
        state.clone(),
        Sealing {
            record,
            key: thumbprint,
            idempotency_key: key,
        },
    )
    .await?;
    Ok(answer.into_response())
}

/// What the token of a hold just placed is signed with.
struct Sealing<H> {
    record: HoldRecord<H>,
    /// The thumbprint of the customer's DPoP key, for `cnf.jkt`.
    key: Option<String>,
    /// The confirmation's idempotency key, whose answer is stored with the seal.
    idempotency_key: Option<Scoped>,
}

/// The confirmation's answer: the hold, its token and what the token is for.
fn confirmation<L: Ledger>(
    record: &HoldRecord<L::Hold>,
    issued: &crate::IssuedToken,
) -> Result<Answer, ApiError> {
    let mut body = hold_view::<L>(record, None)?;
    if let Value::Object(map) = &mut body {
        map.insert("token".into(), issued.token.clone().into());
        map.insert("expires_at".into(), rfc3339(issued.expires_at).into());
        map.insert("capability".into(), L::CAPABILITY.into());
    }
    Answer::json(StatusCode::CREATED, None, &body)
}

/// Signs the token of a hold just placed and seals the hold with its hash, on a task of its
/// own: a request dropped meanwhile (its client gone, the request timeout) cannot leave the
/// hold held and unsealed. A hold whose token could not be signed or sealed is given back, and
/// so is one whose token nobody waits for any more (it never left this process).
async fn sign_and_seal<L: Ledger>(
    state: SharedState<L>,
    sealing: Sealing<L::Hold>,
) -> Result<Answer, ApiError> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let record = &sealing.record;
        let jti = record.jti;
        let issued = state
            .signer
            .issue(
                jti,
                record.customer_id.as_str(),
                sealing.key.as_deref(),
                record.order_processing_id.as_str(),
                L::settlement(&record.hold),
                &L::constraints(&record.hold),
            )
            .await;
        let keys = &state.keys;
        let confirmed = issued.and_then(|issued| {
            let answer = confirmation::<L>(record, &issued)?;
            Ok((ctr_token::sha256_hex(&issued.token), answer))
        });
        let sealed = match confirmed {
            Ok((token_sha256, answer)) => {
                let stored = sealing
                    .idempotency_key
                    .as_ref()
                    .map(|key| keys.answer(key, &answer));
                state
                    .engine
                    .seal(jti, token_sha256, stored)
                    .await
                    .map(|()| answer)
            }
            Err(error) => Err(error),
        };
        let forget = || sealing.idempotency_key.as_ref().map(|key| keys.forget(key));
        let sealed = match sealed {
            Ok(confirmed) => Ok(confirmed),
            // No token for this hold: it is given back before the caller hears of it.
            Err(error) => Err(state
                .engine
                .discard(jti, forget())
                .await
                .map_or_else(|e| e, |()| error)),
        };
        let token_made = sealed.is_ok();
        // A request with an idempotency key will be retried, and its answer is stored: the
        // hold stays for the retry.
        if answer.send(sealed).is_err() && token_made && sealing.idempotency_key.is_none() {
            tracing::info!(domain = L::DOMAIN, %jti, "the confirmation's request was dropped before its token was answered: the hold is given back");
            if let Err(error) = state.engine.discard(jti, forget()).await {
                tracing::error!(domain = L::DOMAIN, %jti, %error, "a hold whose token was never delivered could not be given back: it expires by itself");
            }
        }
        if token_made {
            tracing::info!(domain = L::DOMAIN, %jti, order_processing_id = %record.order_processing_id, "confirmed and held");
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
