//! The checkout: verify every envelope and the settlement, consume the tokens and write the
//! checkout log in one transaction, then hand over to the saga ([`crate::saga`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tracing::Instrument as _;

use axum::http::StatusCode;
use ctr_relay_api::CallFailure;
use ctr_service_kit::{ApiError, CustomerRate, OrderProcessingId};
use ctr_token::{Clock, KeySetCache, VerifiedToken, Verifier, VerifyError, secs};

use crate::domains::DomainClient;
use crate::orders::{BeginError, Failure, Lease, Order, OrderStatus, OrderStore};
use crate::settings::RelaySettings;
use crate::settlement;

pub type IssuerKeys = HashMap<String, Arc<KeySetCache>>;

/// Everything a checkout needs; no signing key among it.
pub struct Relay {
    pub settings: RelaySettings,
    pub verifier: Verifier<IssuerKeys>,
    pub orders: OrderStore,
    pub domains: DomainClient,
    pub clock: Arc<dyn Clock>,
    /// This process, as the owner of the sagas it runs.
    pub instance: String,
    /// Each customer's rate of new orders.
    pub rate: CustomerRate,
    pub metrics: crate::RelayMetrics,
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
    /// A lease on a saga for this process, from now.
    pub(crate) fn lease(&self) -> Lease<'_> {
        let now = self.clock.now_secs();
        Lease {
            owner: &self.instance,
            now,
            until: now.saturating_add(secs(self.settings.saga_lease)),
        }
    }

    /// Runs a checkout. Once admitted it runs to its end even if the caller goes away (and, if
    /// this process dies, a recovery worker finishes it); the caller waits at most the
    /// checkout deadline, then learns that the order is still running.
    pub async fn checkout(
        self: &Arc<Self>,
        id: OrderProcessingId,
        tokens: Vec<String>,
    ) -> Result<CheckoutOutcome, ApiError> {
        let outcome = self.run_checkout(id, tokens).await;
        self.metrics.checkout(match &outcome {
            Err(_) => "refused",
            Ok(CheckoutOutcome::Running(_)) => "running",
            Ok(CheckoutOutcome::Finished(order)) if order.failure.is_none() => "completed",
            Ok(CheckoutOutcome::Finished(_)) => "failed",
        });
        outcome
    }

    async fn run_checkout(
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
        let mut order = self
            .orders
            .begin_checkout(&id, self.lease())
            .await?
            .map_err(|e| match e {
                BeginError::NotFound => ApiError::not_found("order-not-found", "no such order"),
                BeginError::NotOpen(OrderStatus::CheckingOut) => ApiError::conflict(
                    "checkout-in-progress",
                    "another checkout of this order is in progress",
                ),
                BeginError::NotOpen(status) => ApiError::conflict(
                    "order-not-open",
                    format!("the order is {}, not open", status.as_str()),
                ),
            })?;
        let admitted = self
            .admit_and_log(&mut order, &tokens)
            .instrument(tracing::info_span!("checkout.admit", order_processing_id = %id, tokens = tokens.len()))
            .await;
        let tokens = match admitted {
            Ok(tokens) => tokens,
            Err(problem) => {
                self.orders.reopen(&id).await?;
                return Err(problem);
            }
        };
        let relay = self.clone();
        // The saga outlives the request if it must; its span stays in the request's trace.
        let saga = tokio::spawn(
            async move { relay.drive(order, tokens).await }
                .instrument(tracing::info_span!("checkout.saga", order_processing_id = %id)),
        );
        match tokio::time::timeout(self.settings.checkout_deadline, saga).await {
            Ok(finished) => finished
                .map(CheckoutOutcome::Finished)
                .map_err(ApiError::internal),
            Err(_) => {
                tracing::info!(order_processing_id = %id, "checkout still running at the deadline");
                let order = self
                    .orders
                    .get(&id)
                    .await?
                    .ok_or_else(|| ApiError::internal("a running checkout's order is gone"))?;
                Ok(CheckoutOutcome::Running(order))
            }
        }
    }

    /// Admits the tokens and, in one transaction, consumes them and writes the checkout log;
    /// answers the tokens in redemption order. On a refusal nothing is consumed or written.
    async fn admit_and_log(
        &self,
        order: &mut Order,
        tokens: &[String],
    ) -> Result<Vec<String>, ApiError> {
        let verified = self.admit(order, tokens).await?;
        let leeway = secs(self.settings.token_leeway);
        if let Err(index) = self
            .orders
            .admit(order, &verified, leeway, self.lease())
            .await?
        {
            let claims = verified[index].claims();
            let error = VerifyError::Replayed {
                iss: claims.iss.clone(),
                jti: claims.jti.to_string(),
            };
            return Err(token_problem(index, &error));
        }
        Ok(verified.iter().map(|t| t.token().to_owned()).collect())
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
