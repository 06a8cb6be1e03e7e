//! The checkout saga: redeem each token with the domain that issued it, in a fixed order with
//! payment capture last, and compensate in reverse order when one fails.
//!
//! The checkout log is the only truth. Every step is recorded `redeeming` before its domain is
//! called (in the same write as the outcome of the step before it); the last step's `redeemed`
//! and the order's `completed` are one write, and so are a step's `failed` and the order's
//! `failed`. Nothing that decides the outcome waits in memory: a driver that dies anywhere
//! leaves a log from which the recovery worker ([`Relay::recover`]) derives what is left to do.
//!
//! Every write is fenced ([`crate::store::Claim`]): it holds only while no other driver has
//! claimed the checkout since. A write that matches no row, or that fails, stops the driver at
//! once, before it calls any domain again; the recovery worker resumes from the log once the
//! claim runs out (on the database's clock). A checkout still redeeming past
//! `CTR_CHECKOUT_BOUND` (same clock) fails and is compensated.
//!
//! Compensation ends: a hold the domain no longer knows that was never redeemed counts as
//! released; a reversal the domain refuses for good (`cancellation-window-closed`,
//! `hold-mismatch`, a redeemed hold it lost) leaves the step `unreversed` and the order
//! `failed` needing attention, which an operator settles. Any other refusal (a certificate
//! problem, a route that is missing, a domain newer than this relay) and any silence is retried
//! by the recovery worker, each try due a backoff later on the database's clock (from about 1s,
//! doubling with jitter, at most `CTR_COMPENSATION_RETRY_MAX`), until the domain answers. One
//! retried for longer than `CTR_COMPENSATION_ATTENTION_AFTER` also needs attention while its
//! retries go on; a later success clears that.
//!
//! Recovery serves crashed checkouts and due compensations from slots of their own, crashed
//! checkouts first: no number of pending compensations delays a crashed checkout beyond one
//! pass.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use ctr_relay_api::{CallFailure, CancelReason, CancelRequest, HoldReply, RedeemRequest};
use ctr_service_kit::ApiError;

use crate::Relay;
use crate::domains::doubling_backoff;
use crate::orders::{Failure, Order, OrderStatus, TokenOutcome};
use crate::settings::IssuerEntry;
use crate::store::{Claim, Due, WriteError};

/// How many abandoned checkouts one recovery pass looks at.
const RECOVERY_BATCH: i64 = 64;

/// Why a driver stopped before its checkout ended. Either way the log is as the last
/// successful write left it, and the recovery worker resumes from there.
#[derive(Debug)]
pub enum Stopped {
    /// Another driver claimed the checkout since this one's last write.
    LeaseLost,
    /// A write failed.
    Store(ApiError),
}

impl From<WriteError> for Stopped {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::LeaseLost => Self::LeaseLost,
            WriteError::Store(error) => Self::Store(error),
        }
    }
}

impl Stopped {
    pub fn cause(&self) -> &'static str {
        match self {
            Self::LeaseLost => "lease-lost",
            Self::Store(_) => "store",
        }
    }
}

/// How the redemptions went.
enum Redeemed {
    All,
    /// A step failed; the order is `failed` in the log.
    Failed,
}

/// What a cancellation's answer makes of a step.
#[derive(Debug, PartialEq, Eq)]
enum Cancelled {
    Done(TokenOutcome),
    /// The domain did not answer, or refused for a reason that may pass (the problem type):
    /// the recovery worker tries again.
    Retry(String),
    /// The domain refused for good to reverse a redemption.
    Refused(String),
}

/// The problem types with which a domain refuses for good to reverse a redemption (the
/// contract's list; `hold-not-found` counts only for a hold the relay saw redeemed).
const FINAL_REFUSALS: &[&str] = &[
    "cancellation-window-closed",
    "hold-mismatch",
    "hold-not-found",
];

impl Relay {
    /// Drives a checkout from wherever its log says it is to `completed` or `failed`, as the
    /// holder of `claim`. `tokens[i]` is the token of step `i`.
    pub(crate) async fn drive(
        &self,
        mut order: Order,
        mut claim: Claim,
        tokens: Vec<String>,
    ) -> Result<Order, Stopped> {
        let driven = self.drive_claimed(&mut order, &mut claim, &tokens).await;
        if let Err(stopped) = &driven {
            self.metrics.interrupted(stopped.cause());
            match stopped {
                Stopped::LeaseLost => {
                    tracing::warn!(order_processing_id = %order.id, "another driver took the checkout over: this one stops")
                }
                Stopped::Store(error) => {
                    tracing::error!(order_processing_id = %order.id, %error, "the checkout log could not be written: the driver stops and recovery resumes")
                }
            }
        }
        driven.map(|()| order)
    }

    async fn drive_claimed(
        &self,
        order: &mut Order,
        claim: &mut Claim,
        tokens: &[String],
    ) -> Result<(), Stopped> {
        if order.status == OrderStatus::CheckingOut
            && let Redeemed::All = self.redeem_all(order, claim, tokens).await?
        {
            tracing::info!(order_processing_id = %order.id, tokens = %steps(order), "checkout completed");
            return Ok(());
        }
        if order.compensation_pending {
            self.compensate(order, claim).await?;
        }
        Ok(())
    }

    async fn redeem_all(
        &self,
        order: &mut Order,
        claim: &mut Claim,
        tokens: &[String],
    ) -> Result<Redeemed, Stopped> {
        let bound_ms = i64::try_from(self.settings.checkout_bound.as_millis()).unwrap_or(i64::MAX);
        // A step redeemed but not yet written: its outcome goes with the next write (the
        // next step's `redeeming`, or the saga's end). Until then the log says `redeeming`,
        // which recovery treats the same way: redeem again (the domain answers the first
        // result) or reverse.
        let mut unwritten: Option<usize> = None;
        for i in 0..order.tokens.len() {
            match order.tokens[i].outcome {
                TokenOutcome::Redeemed => continue,
                TokenOutcome::Pending | TokenOutcome::Redeeming => {}
                other => {
                    return Err(Stopped::Store(ApiError::internal(format!(
                        "order {}: a checkout still running has a step {}",
                        order.id,
                        other.as_str()
                    ))));
                }
            }
            let capability = order.tokens[i].capability.clone();
            if claim.now_ms >= claim.started_ms.saturating_add(bound_ms) {
                tracing::warn!(order_processing_id = %order.id, "checkout past its bound: compensating");
                let failure = Failure {
                    capability,
                    call: CallFailure::Unavailable,
                };
                self.fail(order, claim, unwritten, i, failure).await?;
                return Ok(Redeemed::Failed);
            }
            order.tokens[i].outcome = TokenOutcome::Redeeming;
            let positions: Vec<usize> = unwritten.take().into_iter().chain([i]).collect();
            self.orders.record_steps(order, claim, &positions).await?;
            let body = RedeemRequest {
                token: tokens.get(i).cloned().unwrap_or_default(),
                order_processing_id: order.id.as_str().to_owned(),
                customer_id: order.customer_id.as_str().to_owned(),
            };
            let step = &order.tokens[i];
            let started = std::time::Instant::now();
            let outcome = self
                .call(&capability, |e| &e.redeem_url, &body)
                .instrument(tracing::info_span!("checkout.redeem", capability = %capability, iss = %step.iss, jti = %step.jti))
                .await;
            let took = started.elapsed();
            match outcome {
                Ok(_) => {
                    self.metrics.redemption(&capability, "redeemed", took);
                    tracing::debug!(iss = %step.iss, jti = %step.jti, order_processing_id = %order.id, "redeemed");
                    order.tokens[i].outcome = TokenOutcome::Redeemed;
                    unwritten = Some(i);
                }
                Err(call) => {
                    self.metrics.redemption(&capability, "failed", took);
                    tracing::warn!(iss = %step.iss, jti = %step.jti, order_processing_id = %order.id, cause = call.cause(), "redemption failed");
                    self.fail(order, claim, None, i, Failure { capability, call })
                        .await?;
                    return Ok(Redeemed::Failed);
                }
            }
        }
        order.status = OrderStatus::Completed;
        self.orders
            .complete(order, claim, self.clock.now_secs())
            .await?;
        Ok(Redeemed::All)
    }

    /// Writes step `failed` failed, with the order, in one write (and the outcome of the step
    /// redeemed before it, if not written yet).
    async fn fail(
        &self,
        order: &mut Order,
        claim: &mut Claim,
        unwritten: Option<usize>,
        failed: usize,
        failure: Failure,
    ) -> Result<(), Stopped> {
        order.tokens[failed].outcome = TokenOutcome::Failed;
        order.failure = Some(failure);
        let positions: Vec<usize> = unwritten.into_iter().chain([failed]).collect();
        self.orders
            .fail(order, claim, &positions, self.clock.now_secs())
            .await?;
        order.status = OrderStatus::Failed;
        order.compensation_pending = true;
        order.compensation_attempts = 0;
        order.compensation_since_ms = Some(claim.now_ms);
        Ok(())
    }

    /// Cancels in reverse order: redeemed tokens are reversed, unredeemed holds released, and a
    /// redemption whose answer never came is cancelled too (it may have been applied). Each
    /// step's outcome is written after its call; the pass ends with one write that says
    /// whether anything is left to retry.
    async fn compensate(&self, order: &mut Order, claim: &mut Claim) -> Result<(), Stopped> {
        let unanswered = matches!(
            order.failure.as_ref().map(|f| &f.call),
            Some(CallFailure::Unavailable)
        );
        // The first step still to retry, with why.
        let mut retry: Option<(String, String)> = None;
        let mut refusals = Vec::new();
        for i in (0..order.tokens.len()).rev() {
            let outcome = order.tokens[i].outcome;
            if outcome.settled_by_compensation() {
                continue;
            }
            let must_reverse = match outcome {
                TokenOutcome::Redeemed | TokenOutcome::Redeeming => true,
                TokenOutcome::Failed => unanswered,
                _ => false,
            };
            let step = &order.tokens[i];
            let body = CancelRequest {
                jti: step.jti,
                order_processing_id: order.id.as_str().to_owned(),
                reason: Some(CancelReason::CheckoutFailed),
            };
            let capability = step.capability.clone();
            let answer = self
                .call(&capability, |e| &e.cancel_url, &body)
                .instrument(tracing::info_span!("checkout.compensate", capability = %capability, jti = %step.jti))
                .await;
            let jti = step.jti;
            match cancelled(outcome, must_reverse, answer) {
                Cancelled::Done(next) => {
                    self.metrics.compensation(
                        &capability,
                        if must_reverse { "reversed" } else { "released" },
                    );
                    if next == outcome {
                        continue; // a failed step's hold released: nothing new to record
                    }
                    order.tokens[i].outcome = next;
                }
                Cancelled::Retry(cause) => {
                    self.metrics.compensation(&capability, "pending");
                    tracing::warn!(%jti, order_processing_id = %order.id, capability, cause, attempts = order.compensation_attempts, "compensation did not get through; the recovery worker retries it");
                    retry.get_or_insert((capability, cause));
                    continue;
                }
                Cancelled::Refused(cause) => {
                    self.metrics.compensation(&capability, "refused");
                    tracing::warn!(%jti, order_processing_id = %order.id, capability, cause, "the domain refused to reverse a redemption: the order needs an operator's attention");
                    refusals.push((i, cause));
                    order.tokens[i].outcome = TokenOutcome::Unreversed;
                }
            }
            self.orders.record_steps(order, claim, &[i]).await?;
        }
        order.compensation_pending = retry.is_some();
        let since_ms = order.compensation_since_ms.unwrap_or(claim.now_ms);
        let overdue_ms = i64::try_from(self.settings.compensation_attention_after.as_millis())
            .unwrap_or(i64::MAX);
        let overdue = retry
            .as_ref()
            .filter(|_| claim.now_ms.saturating_sub(since_ms) >= overdue_ms);
        let had_attention = order.attention.is_some();
        order.attention = attention(order, &refusals, overdue);
        // From about 1s, doubling.
        let retry_in = doubling_backoff(
            Duration::from_secs(1),
            order.compensation_attempts,
            self.settings.compensation_retry_max,
        );
        self.orders
            .end_compensation(
                order,
                claim,
                self.clock.now_secs(),
                i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX),
            )
            .await?;
        if retry.is_some() {
            order.compensation_attempts += 1;
        }
        if had_attention || order.attention.is_some() {
            self.refresh_backlog_gauges().await;
        }
        tracing::info!(order_processing_id = %order.id, tokens = %steps(order), compensation_pending = order.compensation_pending, retry_in = ?order.compensation_pending.then_some(retry_in), needs_attention = order.attention.is_some(), "checkout failed");
        Ok(())
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

    async fn refresh_backlog_gauges(&self) {
        match self.orders.backlog().await {
            Ok(backlog) => self.metrics.backlog(&backlog),
            Err(error) => tracing::warn!(%error, "the saga's backlog could not be counted"),
        }
    }

    /// One recovery pass: claims every checkout whose claim ran out (its driver died or
    /// stalled) and every compensation due for a retry, while a slot of its kind is free, and
    /// drives each on its own task, so that one slow domain or failing order delays no other.
    /// Crashed checkouts come first and have slots of their own. Answers how many it took.
    pub async fn recover(self: &Arc<Self>) -> Result<usize, ApiError> {
        let abandoned = self.orders.abandoned(RECOVERY_BATCH).await?;
        let mut taken = 0;
        for (id, due) in abandoned {
            if self.stopping.is_cancelled() {
                break;
            }
            let slots = match due {
                Due::Checkout => &self.recovery_slots,
                Due::Compensation => &self.compensation_slots,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue; // every slot of its kind is busy: the next pass takes it
            };
            match self.orders.claim(&id).await {
                Ok(Some((order, claim, tokens))) => {
                    taken += 1;
                    let relay = self.clone();
                    self.sagas.spawn(
                        async move {
                            relay.resume(order, claim, tokens).await;
                            drop(slot);
                        }
                        .instrument(
                            tracing::info_span!("checkout.recover", order_processing_id = %id),
                        ),
                    );
                }
                Ok(None) => {} // another driver took it
                Err(error) => {
                    tracing::warn!(order_processing_id = %id, %error, "a checkout could not be claimed for recovery");
                }
            }
        }
        Ok(taken)
    }

    async fn resume(&self, order: Order, claim: Claim, tokens: Vec<String>) {
        if order.status == OrderStatus::CheckingOut && order.tokens.is_empty() {
            // Its driver died between claiming the order and admitting its tokens: nothing
            // was consumed, the order is open again.
            match self.orders.reopen(&order.id, &claim).await {
                Ok(_) => {
                    tracing::info!(order_processing_id = %order.id, "an admission that never finished: the order is open again")
                }
                Err(error) => {
                    tracing::warn!(order_processing_id = %order.id, %error, "the order could not be reopened")
                }
            }
            return;
        }
        tracing::warn!(order_processing_id = %order.id, status = order.status.as_str(), "recovering a checkout");
        // A driver that stops has said why; recovery tries again at a later pass.
        let _ = self.drive(order, claim, tokens).await;
    }

    /// Runs [`Self::recover`] now and every `interval`, and the janitor apart from it, until
    /// the relay stops or is dropped.
    pub fn spawn_workers(self: &Arc<Self>, interval: Duration) {
        self.every(interval, |relay| async move {
            match relay.recover().await {
                Ok(0) => {}
                Ok(taken) => tracing::info!(taken, "recovery pass"),
                Err(error) => tracing::warn!(%error, "recovery pass failed"),
            }
        });
        self.every(interval, |relay| async move {
            if let Err(error) = relay.orders.prune(relay.clock.now_secs()).await {
                tracing::warn!(%error, "prune failed");
            }
            relay.refresh_backlog_gauges().await;
            relay.webhooks.tidy().await;
        });
    }

    /// Runs `work` now and every `interval` on a task of its own, until the relay stops or is
    /// dropped (the task holds it only while `work` runs).
    fn every<F, Fut>(self: &Arc<Self>, interval: Duration, work: F)
    where
        F: Fn(Arc<Self>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let relay = Arc::downgrade(self);
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let Some(relay) = relay.upgrade() else {
                    return;
                };
                work(relay).await;
                tokio::select! {
                    () = stopping.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
    }

    /// Stops admitting checkouts and claiming abandoned ones, and waits up to `grace` for the
    /// sagas this process runs. What is left when it returns is safe: fenced writes and the
    /// log let another relay (or this one, restarted) take it over.
    pub async fn drain(&self, grace: Duration) {
        self.stopping.cancel();
        self.sagas.close();
        if tokio::time::timeout(grace, self.sagas.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.sagas.len(),
                ?grace,
                "sagas still running at the end of the grace period: recovery takes them over"
            );
        }
    }
}

/// What a cancellation's `answer` makes of a step that was `outcome`.
fn cancelled(
    outcome: TokenOutcome,
    must_reverse: bool,
    answer: Result<HoldReply, CallFailure>,
) -> Cancelled {
    let done = || {
        Cancelled::Done(match outcome {
            TokenOutcome::Redeemed | TokenOutcome::Redeeming => TokenOutcome::Compensated,
            TokenOutcome::Pending => TokenOutcome::Released,
            other => other,
        })
    };
    let cause = match answer {
        Ok(_) => return done(),
        Err(failure @ CallFailure::Unavailable) => return Cancelled::Retry(failure.cause().into()),
        Err(CallFailure::Refused { problem_type, .. }) => problem_type,
    };
    match cause.as_str() {
        "hold-contended" => Cancelled::Retry(cause),
        // A domain keeps every redeemed hold: one it does not know was never redeemed.
        "hold-not-found" if outcome != TokenOutcome::Redeemed => Cancelled::Done(match outcome {
            TokenOutcome::Redeeming | TokenOutcome::Pending => TokenOutcome::Released,
            other => other,
        }),
        // A hold never redeemed that the domain will not release expires by itself.
        _ if !must_reverse => done(),
        final_refusal if FINAL_REFUSALS.contains(&final_refusal) => Cancelled::Refused(cause),
        // Anything else may pass: a certificate being replaced, a route missing during a
        // deployment, a domain newer than this relay.
        _ => Cancelled::Retry(cause),
    }
}

/// What needs an operator, derived from the log: every `unreversed` step, with the cause this
/// pass learnt (`refusals`) or the one an earlier pass wrote; and a compensation retried past
/// `CTR_COMPENSATION_ATTENTION_AFTER` (`overdue`: the step's capability and the last cause).
fn attention(
    order: &Order,
    refusals: &[(usize, String)],
    overdue: Option<&(String, String)>,
) -> Option<String> {
    let earlier = |capability: &str| {
        let prefix = format!("{capability}: ");
        order.attention.as_deref().and_then(|text| {
            text.split("; ")
                .find_map(|part| part.strip_prefix(prefix.as_str()))
                .filter(|cause| !cause.starts_with(STILL_RETRIED))
                .map(str::to_owned)
        })
    };
    let mut parts: Vec<String> = order
        .tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| t.outcome == TokenOutcome::Unreversed)
        .map(|(i, t)| {
            let cause = refusals
                .iter()
                .find(|(at, _)| *at == i)
                .map(|(_, cause)| cause.clone())
                .or_else(|| earlier(&t.capability))
                .unwrap_or_else(|| "not reversed".to_owned());
            format!("{}: {cause}", t.capability)
        })
        .collect();
    if let Some((capability, cause)) = overdue {
        parts.push(format!("{capability}: {STILL_RETRIED} ({cause})"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// How a compensation retried past `CTR_COMPENSATION_ATTENTION_AFTER` reads in `attention`.
const STILL_RETRIED: &str = "compensation still retried";

/// Each step of a checkout as `capability jti outcome`, for its one log line at the end.
fn steps(order: &Order) -> String {
    order
        .tokens
        .iter()
        .map(|t| format!("{} {} {}", t.capability, t.jti, t.outcome.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}
