//! The checkout saga: redeem each token with the domain that issued it, in a fixed order with
//! payment capture last, and compensate in reverse order when one fails. Every step is recorded
//! as `redeeming` before its domain is called (in the same statement as the outcome of the step
//! before it; the last outcome is written with the order's), so a relay that dies mid-checkout leaves
//! a log that the recovery worker ([`Relay::recover`], at start and periodically) drives to its
//! end: it resumes the redemptions (domains answer a repeated redemption with the first result)
//! or compensates. A checkout still redeeming after `CTR_CHECKOUT_BOUND` is failed and
//! compensated; a reversal that cannot get through stays pending and is retried.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use ctr_relay_api::{CallFailure, CancelReason, CancelRequest, HoldReply, RedeemRequest};
use ctr_service_kit::ApiError;
use ctr_token::secs;

use crate::Relay;
use crate::orders::{Failure, Order, OrderStatus, TokenOutcome};
use crate::settings::IssuerEntry;

/// How many abandoned checkouts one recovery pass takes over at most.
const RECOVERY_BATCH: i64 = 20;

impl Relay {
    /// Drives a checkout from wherever its log says it is to `completed` or `failed`.
    /// `tokens[i]` is the token of step `i`.
    pub(crate) async fn drive(&self, mut order: Order, tokens: Vec<String>) -> Order {
        if order.status == OrderStatus::CheckingOut && order.failure.is_none() {
            self.redeem_all(&mut order, &tokens).await;
            if order.failure.is_none() {
                order.status = OrderStatus::Completed;
                self.save(&mut order).await;
                tracing::info!(order_processing_id = %order.id, tokens = %steps(&order), "checkout completed");
                return order;
            }
        }
        self.compensate(&mut order).await;
        order
    }

    async fn redeem_all(&self, order: &mut Order, tokens: &[String]) {
        let started = order
            .checkout_started_at
            .unwrap_or_else(|| self.clock.now_secs());
        let bound = secs(self.settings.checkout_bound);
        // A step redeemed but not yet written: its outcome goes with the next write (the
        // next step's `redeeming`, or the saga's end). Until then the log says `redeeming`,
        // which recovery treats the same way: redeem again (the domain answers the first
        // result) or reverse.
        let mut unwritten: Option<usize> = None;
        for (i, token) in tokens.iter().enumerate() {
            let step = &order.tokens[i];
            match step.outcome {
                TokenOutcome::Redeemed => continue,
                TokenOutcome::Pending | TokenOutcome::Redeeming => {}
                _ => break,
            }
            let capability = step.capability.clone();
            if self.clock.now_secs() > started.saturating_add(bound) {
                tracing::warn!(order_processing_id = %order.id, "checkout past its bound: compensating");
                order.tokens[i].outcome = TokenOutcome::Failed;
                order.failure = Some(Failure {
                    capability,
                    call: CallFailure::Unavailable,
                });
                self.save_steps(order, unwritten.into_iter().chain([i]))
                    .await;
                return;
            }
            self.renew_if_due(order).await;
            order.tokens[i].outcome = TokenOutcome::Redeeming;
            self.save_steps(order, unwritten.take().into_iter().chain([i]))
                .await;
            let body = RedeemRequest {
                token: token.clone(),
                order_processing_id: order.id.as_str().to_owned(),
                customer_id: order.customer_id.as_str().to_owned(),
            };
            let step = &mut order.tokens[i];
            let started = std::time::Instant::now();
            let outcome = self
                .call(&capability, |e| &e.redeem_url, &body)
                .instrument(tracing::info_span!("checkout.redeem", capability = %capability, iss = %step.iss, jti = %step.jti))
                .await;
            let took = started.elapsed();
            match outcome {
                Ok(_) => {
                    self.metrics.redemption(&capability, "redeemed", took);
                    step.outcome = TokenOutcome::Redeemed;
                    tracing::debug!(iss = %step.iss, jti = %step.jti, order_processing_id = %order.id, "redeemed");
                    unwritten = Some(i);
                }
                Err(call) => {
                    self.metrics.redemption(&capability, "failed", took);
                    tracing::warn!(iss = %step.iss, jti = %step.jti, order_processing_id = %order.id, cause = call.cause(), "redemption failed");
                    step.outcome = TokenOutcome::Failed;
                    order.failure = Some(Failure { capability, call });
                    self.save_steps(order, [i]).await;
                    return;
                }
            }
        }
    }

    /// Cancels in reverse order: redeemed tokens are reversed, unredeemed holds released, and a
    /// redemption whose answer never came is cancelled too (it may have been applied).
    async fn compensate(&self, order: &mut Order) {
        order.status = OrderStatus::Failed;
        order.compensation_pending = true;
        self.save(order).await;
        let unanswered = matches!(
            order.failure.as_ref().map(|f| &f.call),
            Some(CallFailure::Unavailable)
        );
        let mut pending = false;
        for i in (0..order.tokens.len()).rev() {
            let step = &order.tokens[i];
            let must_reverse = match step.outcome {
                TokenOutcome::Compensated | TokenOutcome::Released => continue,
                TokenOutcome::Redeemed | TokenOutcome::Redeeming => true,
                TokenOutcome::Failed => unanswered,
                TokenOutcome::Pending => false,
            };
            self.renew_if_due(order).await;
            let step = &order.tokens[i];
            let body = CancelRequest {
                jti: step.jti,
                order_processing_id: order.id.as_str().to_owned(),
                reason: Some(CancelReason::CheckoutFailed),
            };
            let capability = step.capability.clone();
            let outcome = self
                .call(&capability, |e| &e.cancel_url, &body)
                .instrument(tracing::info_span!("checkout.compensate", capability = %capability, jti = %step.jti))
                .await;
            let step = &mut order.tokens[i];
            match outcome {
                Ok(_) => {
                    self.metrics.compensation(
                        &capability,
                        if must_reverse { "reversed" } else { "released" },
                    );
                    step.outcome = match step.outcome {
                        TokenOutcome::Redeemed | TokenOutcome::Redeeming => {
                            TokenOutcome::Compensated
                        }
                        TokenOutcome::Pending => TokenOutcome::Released,
                        other => other,
                    };
                }
                Err(call) if call.cause() == "cancellation-window-closed" => {
                    // Retrying cannot help: the domain holds the redemption final. An operator
                    // must settle it (a refund is not the relay's to make).
                    self.metrics.compensation(&capability, "window-closed");
                    tracing::error!(jti = %step.jti, order_processing_id = %order.id, "compensation refused: the redemption is past the domain's cancellation window");
                }
                Err(call) if must_reverse => {
                    self.metrics.compensation(&capability, "pending");
                    pending = true;
                    tracing::error!(jti = %step.jti, order_processing_id = %order.id, cause = call.cause(), "compensation failed; the recovery worker retries it");
                }
                Err(call) => {
                    tracing::debug!(jti = %step.jti, cause = call.cause(), "the hold could not be released; it expires by itself");
                }
            }
            self.save_steps(order, [i]).await;
        }
        order.compensation_pending = pending;
        self.save(order).await;
        tracing::info!(order_processing_id = %order.id, tokens = %steps(order), compensation_pending = pending, "checkout failed");
    }

    /// Extends the saga's lease when less than half of it is left, so that it outlasts the
    /// next call (the settings require a lease longer than two calls with their retries).
    async fn renew_if_due(&self, order: &mut Order) {
        let lease = self.lease();
        let half = secs(self.settings.saga_lease) / 2;
        if order
            .lease_until
            .is_some_and(|until| until - lease.now >= half)
        {
            return;
        }
        if let Err(error) = self.orders.renew(order, lease).await {
            tracing::error!(order_processing_id = %order.id, %error, "the saga's lease could not be renewed");
        }
    }

    /// Records the steps at `positions`; a failure is logged as for [`Self::save`].
    async fn save_steps(&self, order: &Order, positions: impl IntoIterator<Item = usize>) {
        let positions: Vec<usize> = positions.into_iter().collect();
        if let Err(error) = self.orders.save_steps(order, &positions).await {
            tracing::error!(order_processing_id = %order.id, %error, "the checkout log could not be written");
        }
    }

    /// Records the saga's progress and renews its lease. A store that fails here is logged:
    /// the saga goes on (every call it makes is idempotent) and, if this process dies, the
    /// recovery worker resumes from the last recorded step.
    async fn save(&self, order: &mut Order) {
        if let Err(error) = self.orders.save(order, self.lease()).await {
            tracing::error!(order_processing_id = %order.id, %error, "the checkout log could not be written");
        }
    }

    /// Calls the endpoint `url` of the issuer routing `capability`. Admission checked that a
    /// route exists; one removed from the configuration since (a recovered checkout) counts as
    /// an issuer that does not answer.
    async fn call<B: serde::Serialize>(
        &self,
        capability: &str,
        url: fn(&IssuerEntry) -> &String,
        body: &B,
    ) -> Result<HoldReply, CallFailure> {
        let Some((_, entry)) = self.settings.issuer_of(capability) else {
            tracing::error!(capability, "no issuer routes this capability any more");
            return Err(CallFailure::Unavailable);
        };
        self.domains.post_idempotent(url(entry), body).await
    }

    /// One recovery pass: takes over every checkout whose lease ran out (its relay died, or
    /// its compensation is pending) and drives it to its end. Answers how many it took.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, ApiError> {
        let now = self.clock.now_secs();
        self.orders.prune(now).await?;
        let abandoned = self.orders.abandoned(now, RECOVERY_BATCH).await?;
        let mut taken = 0;
        for candidate in abandoned {
            let Some(order) = self.orders.claim(&candidate, self.lease()).await? else {
                continue; // another relay took it
            };
            taken += 1;
            if order.status == OrderStatus::CheckingOut && order.tokens.is_empty() {
                // Died between taking the order and admitting its tokens: nothing consumed.
                self.orders.reopen(&order.id).await?;
                continue;
            }
            tracing::warn!(order_processing_id = %order.id, status = order.status.as_str(), "recovering a checkout");
            let tokens = self.orders.tokens(&order.id).await?;
            self.drive(order, tokens).await;
        }
        Ok(taken)
    }

    /// Runs [`Self::recover`] now and every `interval`, until the relay is dropped.
    pub fn spawn_recovery(self: &Arc<Self>, interval: Duration) {
        let relay = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(relay) = relay.upgrade() else {
                    return;
                };
                match relay.recover().await {
                    Ok(0) => {}
                    Ok(taken) => tracing::info!(taken, "recovery pass"),
                    Err(error) => tracing::warn!(%error, "recovery pass failed"),
                }
                drop(relay);
                tokio::time::sleep(interval).await;
            }
        });
    }
}

/// Each step of a checkout as `capability jti outcome`, for its one log line at the end.
fn steps(order: &Order) -> String {
    order
        .tokens
        .iter()
        .map(|t| format!("{} {} {}", t.capability, t.jti, t.outcome.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}
