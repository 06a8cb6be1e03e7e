//! The checkout: verify every envelope, consume the tokens, redeem in a fixed order over mTLS,
//! and compensate in reverse order when a redemption fails.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::http::StatusCode;
use ctr_relay_api::{CallFailure, CancelReason, CancelRequest, RedeemRequest};
use ctr_service_kit::{ApiError, OrderProcessingId};
use ctr_token::{Clock, KeySetCache, ReplayStore, VerifiedToken, Verifier, VerifyError};

use crate::domains::DomainClient;
use crate::orders::{
    BeginError, Failure, Order, OrderStatus, OrderStore, TokenOutcome, TokenRecord,
};
use crate::settings::RelaySettings;
use crate::settlement;

pub type IssuerKeys = HashMap<String, Arc<KeySetCache>>;

/// Everything a checkout needs; no signing key among it.
pub struct Relay {
    pub settings: RelaySettings,
    pub verifier: Verifier<IssuerKeys>,
    pub replay: Arc<dyn ReplayStore>,
    pub orders: Arc<dyn OrderStore>,
    pub domains: DomainClient,
    pub clock: Arc<dyn Clock>,
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

/// How a checkout request ends: the saga finished within the deadline, or it still runs.
#[derive(Debug)]
pub enum CheckoutOutcome {
    Finished(Order),
    /// Still redeeming or compensating; the order (as of the deadline) is at its URL.
    Running(Order),
}

impl Relay {
    /// Runs a checkout. Once redemption starts it runs to its end even if the caller goes
    /// away, so compensation is never cut short; the caller waits at most the checkout
    /// deadline, then learns that the order is still running.
    pub async fn checkout(
        self: &Arc<Self>,
        id: OrderProcessingId,
        tokens: Vec<String>,
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
        let now = self.clock.now_secs();
        let mut order = self
            .orders
            .begin_checkout(&id, now)
            .await
            .map_err(|e| match e {
                BeginError::NotFound => {
                    ApiError::not_found("order-not-found", format!("no order {id}"))
                }
                BeginError::NotOpen(OrderStatus::CheckingOut) => ApiError::conflict(
                    "checkout-in-progress",
                    "another checkout of this order is in progress",
                ),
                BeginError::NotOpen(status) => ApiError::conflict(
                    "order-not-open",
                    format!("the order is {status:?}, not open").to_lowercase(),
                ),
            })?;
        match self.admit(&order, &tokens).await {
            Ok(verified) => {
                let relay = self.clone();
                let task = tokio::spawn(async move {
                    relay.redeem_all(&mut order, verified).await;
                    relay.orders.save(order.clone()).await;
                    order
                });
                match tokio::time::timeout(self.settings.checkout_deadline, task).await {
                    Ok(finished) => finished
                        .map(CheckoutOutcome::Finished)
                        .map_err(ApiError::internal),
                    Err(_) => {
                        tracing::info!(order_processing_id = %id, "checkout still running at the deadline");
                        let order = self.orders.get(&id).await.ok_or_else(|| {
                            ApiError::internal("a running checkout's order is gone")
                        })?;
                        Ok(CheckoutOutcome::Running(order))
                    }
                }
            }
            Err(problem) => {
                order.status = OrderStatus::Open;
                self.orders.save(order).await;
                Err(problem)
            }
        }
    }

    /// Every envelope check, then the policy of the checkout, then the replay store: all or
    /// nothing, before anything is redeemed. Answers the tokens in redemption order.
    async fn admit(
        &self,
        order: &Order,
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
        let refs: Vec<&VerifiedToken> = verified.iter().collect();
        self.replay
            .consume_all(&refs)
            .await
            .map_err(|e| token_problem(0, &e))?;
        Ok(verified)
    }

    async fn redeem_all(&self, order: &mut Order, tokens: Vec<VerifiedToken>) {
        order.tokens = tokens
            .iter()
            .map(|t| TokenRecord {
                iss: t.claims().iss.clone(),
                jti: t.claims().jti,
                capability: t.claims().capabilities[0].clone(),
                settles: t.claims().settles,
                outcome: TokenOutcome::Pending,
            })
            .collect();
        self.orders.save(order.clone()).await;
        let mut failed_at = None;
        for (i, token) in tokens.iter().enumerate() {
            let entry = self.entry(&order.tokens[i].capability);
            let body = RedeemRequest {
                token: token.token().to_owned(),
                order_processing_id: order.id.as_str().to_owned(),
                customer_id: order.customer_id.as_str().to_owned(),
            };
            match self.domains.post_idempotent(&entry.redeem_url, &body).await {
                Ok(_) => {
                    order.tokens[i].outcome = TokenOutcome::Redeemed;
                    tracing::info!(iss = %order.tokens[i].iss, jti = %order.tokens[i].jti, order_processing_id = %order.id, "redeemed");
                }
                Err(call) => {
                    tracing::warn!(iss = %order.tokens[i].iss, jti = %order.tokens[i].jti, order_processing_id = %order.id, cause = call.cause(), "redemption failed");
                    order.tokens[i].outcome = TokenOutcome::Failed;
                    order.failure = Some(Failure {
                        capability: order.tokens[i].capability.clone(),
                        call,
                    });
                    failed_at = Some(i);
                    break;
                }
            }
            self.orders.save(order.clone()).await;
        }
        let Some(failed_at) = failed_at else {
            order.status = OrderStatus::Completed;
            return;
        };
        // Compensate: cancel in reverse order. The failed one too (a timed-out redemption may
        // have been applied) and the later ones (their holds are released at once).
        for i in (0..order.tokens.len()).rev() {
            let record = &order.tokens[i];
            let entry = self.entry(&record.capability);
            let body = CancelRequest {
                jti: record.jti,
                order_processing_id: order.id.as_str().to_owned(),
                reason: Some(CancelReason::CheckoutFailed),
            };
            let outcome = self.domains.post_idempotent(&entry.cancel_url, &body).await;
            let record = &mut order.tokens[i];
            match (outcome, record.outcome) {
                (Ok(_), TokenOutcome::Redeemed) => record.outcome = TokenOutcome::Compensated,
                (Ok(_), TokenOutcome::Pending) => record.outcome = TokenOutcome::Released,
                (Ok(_), _) => {}
                (Err(call), _) if i == failed_at => {
                    tracing::debug!(jti = %record.jti, cause = call.cause(), "the failed hold could not be cancelled; it expires by itself");
                }
                (Err(call), _) => {
                    tracing::error!(jti = %record.jti, order_processing_id = %order.id, cause = call.cause(), detail = call.detail(), "compensation failed");
                }
            }
        }
        order.status = OrderStatus::Failed;
    }

    fn entry(&self, capability: &str) -> &crate::settings::IssuerEntry {
        self.settings
            .issuer_of(capability)
            .map(|(_, e)| e)
            .unwrap_or_else(|| unreachable!("admitted tokens are routable"))
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
    .with("order", order.view(now))
}
