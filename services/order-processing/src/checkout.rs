//! The checkout: verify every envelope and the settlement, consume the tokens and write the
//! checkout log in one transaction, then hand over to the saga ([`crate::saga`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use axum::http::StatusCode;
use ctr_relay_api::CallFailure;
use ctr_service_kit::idempotency::{Scoped, outstanding};
use ctr_service_kit::{ApiError, CustomerId, CustomerRate, IdempotencyKeys, OrderProcessingId};
use ctr_token::{Clock, KeySetCache, VerifiedToken, Verifier, VerifyError, secs};

use crate::domains::DomainClient;
use crate::orders::{Failure, Order, OrderStatus};
use crate::settings::RelaySettings;
use crate::settlement;
use crate::store::{BeginError, Claim, OrderStore, Unadmitted, WriteError};

pub type IssuerKeys = HashMap<String, Arc<KeySetCache>>;

/// Everything a checkout needs; no signing key among it.
pub struct Relay {
    pub settings: RelaySettings,
    pub verifier: Verifier<IssuerKeys>,
    pub orders: OrderStore,
    /// Delivers the orders' events to the webhook endpoints.
    pub webhooks: Arc<crate::Dispatcher>,
    /// The customers' idempotency keys, in the relay's store.
    pub keys: IdempotencyKeys,
    pub domains: DomainClient,
    pub clock: Arc<dyn Clock>,
    /// Each customer's rate of new orders.
    pub rate: CustomerRate,
    pub metrics: crate::RelayMetrics,
    /// The sagas this process drives (checkouts and recoveries), drained at shutdown.
    pub sagas: TaskTracker,
    /// Whether capability tokens without `cnf` are checked out (`CTR_AUTH_ALLOW_BEARER`).
    pub unbound_tokens: bool,
    /// Cancelled when the relay shuts down: no new checkout is admitted or claimed.
    pub stopping: CancellationToken,
    /// How many recovered checkouts this process drives at once.
    pub recovery_slots: Arc<Semaphore>,
    /// How many pending compensations this process retries at once, beside them.
    pub compensation_slots: Arc<Semaphore>,
}

fn token_problem(index: usize, error: &VerifyError) -> ApiError {
    let status =
        StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    ApiError::new(
        status,
        error.problem_type(),
        "Token refused",
        format!("token {index}: {error}"),
    )
    .with("token_index", index)
}

fn refused(slug: &'static str, detail: String) -> ApiError {
    ApiError::invalid(slug, detail)
}

/// A token bound to a key (`cnf.jkt`) the checkout request did not prove: 401 with a DPoP
/// challenge (RFC 9449 section 7.1), as for a proof that does not fit the access token.
fn key_not_proved(index: usize) -> ApiError {
    let detail = format!(
        "token {index} is bound to a key (cnf.jkt) that this request's DPoP proof does not prove"
    );
    let mut problem = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "capability-key-mismatch",
        "Unauthorized",
        detail.clone(),
    )
    .with("token_index", index);
    problem.challenge = Some(
        format!("DPoP realm=\"ctr\", error=\"invalid_dpop_proof\", error_description=\"{detail}\"")
            .into(),
    );
    problem
}

/// Who checks out: the authenticated customer and, when its access token is DPoP-bound, the
/// thumbprint of the key its request proved.
#[derive(Debug, Clone)]
pub struct Caller {
    pub customer: CustomerId,
    pub key: Option<String>,
}

/// How a checkout request ends: the saga finished within the deadline, or it still runs.
#[derive(Debug)]
pub enum CheckoutOutcome {
    Finished(Order),
    /// Still redeeming or compensating at the deadline, or its driver stopped and the recovery
    /// worker resumes it: the order as stored, when it could be read.
    Running(OrderProcessingId, Option<Order>),
    /// A retry under the idempotency key of a checkout admitted before: that checkout's
    /// outcome as it stands (never `Replayed`).
    Replayed(Box<CheckoutOutcome>),
}

impl Relay {
    /// Runs a checkout. Once admitted it runs to its end even if the caller goes away (and, if
    /// this process dies, a recovery worker finishes it); the caller waits at most the
    /// checkout deadline, admission included, then learns that the order is still running.
    pub async fn checkout(
        self: &Arc<Self>,
        id: OrderProcessingId,
        caller: Caller,
        tokens: Vec<String>,
        key: Option<Scoped>,
    ) -> Result<CheckoutOutcome, ApiError> {
        let deadline = tokio::time::Instant::now() + self.settings.checkout_deadline;
        let outcome = if self.stopping.is_cancelled() {
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting-down",
                "Shutting down",
                "this relay is shutting down and admits no new checkout; retry",
            )
            .retry_after(1))
        } else {
            let relay = self.clone();
            let order = id.clone();
            // The checkout outlives the request if it must; its span stays in the request's
            // trace. A panic in it leaves the log to the recovery worker.
            let task = self.sagas.spawn(
                async move { relay.run_checkout(order, caller, tokens, key).await }
                    .instrument(tracing::info_span!("checkout.saga", order_processing_id = %id)),
            );
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(panicked)) => {
                    tracing::error!(order_processing_id = %id, error = %panicked, "the checkout's driver panicked; recovery resumes it");
                    Ok(self.pending(id).await)
                }
                Err(_) => {
                    tracing::info!(order_processing_id = %id, "checkout still running at the deadline");
                    Ok(self.pending(id).await)
                }
            }
        };
        self.metrics.checkout(match &outcome {
            Err(_) => "refused",
            Ok(CheckoutOutcome::Running(..)) => "running",
            Ok(CheckoutOutcome::Replayed(_)) => "replayed",
            Ok(CheckoutOutcome::Finished(order)) if order.failure.is_none() => "completed",
            Ok(CheckoutOutcome::Finished(_)) => "failed",
        });
        outcome
    }

    /// The answer about a checkout whose end this request does not know: the order as stored
    /// (finished if it did end meanwhile).
    async fn pending(&self, id: OrderProcessingId) -> CheckoutOutcome {
        match self.orders.get(&id).await {
            Ok(Some(order)) if order.ended() && order.status != OrderStatus::Open => {
                CheckoutOutcome::Finished(order)
            }
            Ok(order) => CheckoutOutcome::Running(id, order),
            Err(error) => {
                tracing::warn!(order_processing_id = %id, %error, "the order could not be read");
                CheckoutOutcome::Running(id, None)
            }
        }
    }

    /// What a retry under `key`, taken by the admission of the checkout of order `id`, is
    /// answered: the checkout's outcome as it stands; 409 while the first request may still
    /// be waiting for it (until the checkout deadline from the admission); 422 if the key was
    /// taken by another request. `None` if the key is not taken.
    async fn replay(
        &self,
        key: &Scoped,
        id: &OrderProcessingId,
    ) -> Result<Option<CheckoutOutcome>, ApiError> {
        let Some(recorded) = self.keys.recorded(key).await? else {
            return Ok(None);
        };
        // The fingerprint covers the path: the key's checkout is this order's.
        let outcome = self.pending(id.clone()).await;
        let waiting = secs(self.settings.checkout_deadline).saturating_sub(recorded.age_secs);
        if matches!(outcome, CheckoutOutcome::Running(..)) && waiting > 0 {
            return Err(outstanding(u64::try_from(waiting).unwrap_or(1)));
        }
        Ok(Some(CheckoutOutcome::Replayed(Box::new(outcome))))
    }

    /// `refusal`, unless the request is a retry under the key of an admitted checkout: then
    /// that checkout's answer ([`Self::replay`]).
    async fn unless_replayed(
        &self,
        key: Option<&Scoped>,
        id: &OrderProcessingId,
        refusal: ApiError,
    ) -> Result<CheckoutOutcome, ApiError> {
        match key {
            Some(key) => self.replay(key, id).await?.ok_or(refusal),
            None => Err(refusal),
        }
    }

    async fn run_checkout(
        self: &Arc<Self>,
        id: OrderProcessingId,
        caller: Caller,
        tokens: Vec<String>,
        key: Option<Scoped>,
    ) -> Result<CheckoutOutcome, ApiError> {
        if tokens.is_empty() || tokens.len() > self.settings.max_tokens {
            return Err(refused(
                "invalid-request",
                format!(
                    "`tokens` must hold 1 to {} tokens",
                    self.settings.max_tokens
                ),
            ));
        }
        let begun = self
            .orders
            .begin_checkout(&id, &caller.customer, self.clock.now_secs())
            .await?;
        let (mut order, mut claim) = match begun {
            Ok(begun) => begun,
            // A retry of an admitted checkout finds its order no longer open.
            Err(refusal) => {
                let refusal = match refusal {
                    BeginError::NotFound => ApiError::not_found("order-not-found", "no such order"),
                    BeginError::NotOpen(OrderStatus::CheckingOut) => ApiError::conflict(
                        "checkout-in-progress",
                        "another checkout of this order is in progress",
                    ),
                    BeginError::NotOpen(status) => ApiError::conflict(
                        "order-not-open",
                        format!("the order is {}, not open", status.as_str()),
                    ),
                };
                return self.unless_replayed(key.as_ref(), &id, refusal).await;
            }
        };
        let verified = match self
            .admit(&order, caller.key.as_deref(), &tokens)
            .instrument(tracing::info_span!("checkout.admit", order_processing_id = %id, tokens = tokens.len()))
            .await
        {
            Ok(verified) => verified,
            Err(problem) => return Err(self.give_back(&id, &claim, problem).await),
        };
        let leeway = secs(self.settings.token_leeway);
        let taken = key
            .as_ref()
            .map(|key| self.keys.record(key, id.as_str(), None, None));
        match self
            .orders
            .admit(&mut order, &verified, leeway, &mut claim, taken)
            .await
        {
            Ok(Ok(())) => {}
            // Another request took the key: another order's checkout (the fingerprint covers
            // the path), 422; or one whose admission has not committed yet, 409.
            Ok(Err(Unadmitted::KeyTaken)) => {
                let reused = match &key {
                    Some(key) => self.keys.recorded(key).await.err(),
                    None => None,
                };
                let refusal = reused.unwrap_or_else(|| outstanding(1));
                return Err(self.give_back(&id, &claim, refusal).await);
            }
            Ok(Err(Unadmitted::Replayed(index))) => {
                let claims = verified[index].claims();
                let error = VerifyError::Replayed {
                    iss: claims.iss.clone(),
                    jti: claims.jti.to_string(),
                };
                return Err(self
                    .give_back(&id, &claim, token_problem(index, &error))
                    .await);
            }
            Err(WriteError::LeaseLost) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "checkout-interrupted",
                    "Checkout interrupted",
                    "the checkout was interrupted before any token was consumed; retry it",
                )
                .retry_after(1));
            }
            Err(WriteError::Store(error)) => {
                // Whether the admission was written is known only from the log: reopening
                // succeeds only when it was not.
                return match self.orders.reopen(&id, &claim).await {
                    Ok(true) => Err(error),
                    _ => Ok(self.pending(id).await),
                };
            }
        }
        let tokens = verified.iter().map(|t| t.token().to_owned()).collect();
        Ok(match self.drive(order, claim, tokens).await {
            Ok(order) => CheckoutOutcome::Finished(order),
            Err(_) => self.pending(id).await,
        })
    }

    /// Gives an order whose checkout was refused before anything was consumed back to `open`
    /// and answers the refusal. If the store fails here, the recovery worker reopens it once
    /// the claim runs out.
    async fn give_back(
        &self,
        id: &OrderProcessingId,
        claim: &Claim,
        refusal: ApiError,
    ) -> ApiError {
        if let Err(error) = self.orders.reopen(id, claim).await {
            tracing::warn!(order_processing_id = %id, %error, "a refused checkout's order could not be reopened yet; recovery will");
        }
        refusal
    }

    /// Every envelope check, then the policy of the checkout, then the replay store: all or
    /// nothing, before anything is redeemed. Answers the tokens in redemption order.
    async fn admit(
        &self,
        order: &Order,
        key: Option<&str>,
        tokens: &[String],
    ) -> Result<Vec<VerifiedToken>, ApiError> {
        let mut seen = HashSet::new();
        let mut verified = Vec::with_capacity(tokens.len());
        for (index, token) in tokens.iter().enumerate() {
            if !seen.insert(token.as_str()) {
                return Err(refused(
                    "duplicate-token",
                    format!("token {index} appears twice"),
                ));
            }
            let token = self
                .verifier
                .verify(token, order.id.as_str())
                .await
                .map_err(|e| token_problem(index, &e))?;
            let claims = token.claims();
            tracing::debug!(iss = %claims.iss, jti = %claims.jti, token_sha256 = token.token_sha256(), "envelope verified");
            if claims.sub != order.customer_id.as_str() {
                return Err(refused(
                    "customer-mismatch",
                    format!("token {index} was confirmed for another customer"),
                )
                .with("token_index", index));
            }
            match claims.bound_key() {
                Some(bound) if key == Some(bound) => {}
                Some(_) => return Err(key_not_proved(index)),
                None if self.unbound_tokens => {}
                None => {
                    return Err(refused(
                        "capability-unbound",
                        format!(
                            "token {index} is not bound to the customer's key (no cnf.jkt), and this deployment accepts bound tokens only"
                        ),
                    )
                    .with("token_index", index));
                }
            }
            if claims.capabilities.len() != 1 {
                return Err(refused(
                    "token-capabilities-unroutable",
                    format!("token {index} must carry exactly one capability"),
                ));
            }
            verified.push(token);
        }
        let position = |t: &VerifiedToken| {
            self.settings
                .redemption_order
                .iter()
                .position(|c| *c == t.claims().capabilities[0])
        };
        let mut capabilities = HashSet::new();
        for token in &verified {
            let capability = &token.claims().capabilities[0];
            if position(token).is_none() {
                return Err(refused(
                    "capability-not-routable",
                    format!("no route for `{capability}`"),
                ));
            }
            if !capabilities.insert(capability.clone()) {
                return Err(refused(
                    "duplicate-capability",
                    format!("`{capability}` appears in more than one token"),
                ));
            }
        }
        if let Some(missing) = self
            .settings
            .required_capabilities
            .iter()
            .find(|c| !capabilities.contains(*c))
        {
            return Err(refused(
                "capability-missing",
                format!("a checkout needs a `{missing}` token"),
            ));
        }
        settlement::check(
            order.total,
            verified.iter().map(VerifiedToken::claims),
            &self.settings.priced_capabilities,
        )
        .map_err(|e| e.problem())?;
        verified.sort_by_key(|t| position(t));
        Ok(verified)
    }
}

/// The problem answered when a checkout ended `failed`.
pub fn failure_problem(order: &Order, failure: &Failure, now: i64) -> ApiError {
    let (status, slug) = match failure.call {
        CallFailure::Unavailable => (StatusCode::BAD_GATEWAY, "issuer-unavailable"),
        CallFailure::Refused { .. } => (StatusCode::CONFLICT, "redemption-refused"),
    };
    ApiError::new(
        status,
        slug,
        "Checkout failed",
        format!(
            "redeeming `{}` failed ({}): {}; earlier redemptions were cancelled",
            failure.capability,
            failure.call.cause(),
            failure.call.detail()
        ),
    )
    .with("failed_capability", failure.capability.clone())
    .with("cause", failure.call.cause())
    .with(
        "order",
        serde_json::to_value(order.view(now)).unwrap_or_default(),
    )
}
