//! The dispatcher: delivers the outbox's events to the configured webhook endpoints as
//! Standard Webhooks, apart from the saga (a slow receiver delays no checkout).
//!
//! Each pass claims due deliveries (fenced claims on the database clock, shared with the
//! replicas: one attempt in flight per delivery, a later event of an order held back while an
//! earlier one is pending) up to the free attempt slots, and runs each attempt on a task of its
//! own: the three headers, the body exactly as written in the outbox, a per-attempt timeout,
//! no redirect. A 2xx ends the delivery; anything else is retried after a doubling wait with
//! jitter, `CTR_WEBHOOK_RETRY_FIRST` up to `CTR_WEBHOOK_RETRY_MAX`, until
//! `CTR_WEBHOOK_RETRY_FOR` has passed; then the delivery is failed, counted, listed on the
//! admin listener and redelivered by hand.
//!
//! What it holds is bounded: at most `CTR_WEBHOOK_CONCURRENCY` attempts (each with one body)
//! at once, whatever waits in the store. The store holds an event per transition (at most
//! three per order) and a delivery per event and endpoint, each pending for at most
//! `CTR_WEBHOOK_RETRY_FOR` and kept `CTR_WEBHOOK_RETENTION` after it ended.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ctr_service_kit::{ApiError, ConfigError};
use ctr_token::Clock;
use ctr_webhooks::{GuardedResolver, Secrets, Signed};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domains::{doubling_backoff, error_chain};
use crate::metrics::WebhookMetrics;
use crate::settings::RelaySettings;
use crate::store::{Attempt, Claimed, Deliveries, Settled};

/// How often a dispatcher looks for due deliveries when nothing wakes it (an event written
/// by a replica, a retry falling due).
const POLL: Duration = Duration::from_millis(500);
/// How long an error text is kept for the admin listing.
const ERROR_TEXT: usize = 300;

/// One configured endpoint.
struct Target {
    url: reqwest::Url,
    secret_file: PathBuf,
    client: reqwest::Client,
}

/// Delivers order events.
pub struct Dispatcher {
    pub deliveries: Deliveries,
    targets: BTreeMap<String, Target>,
    slots: Arc<Semaphore>,
    timeout: Duration,
    retry_first: Duration,
    retry_max: Duration,
    window_ms: i64,
    retention_ms: i64,
    metrics: WebhookMetrics,
    clock: Arc<dyn Clock>,
    written: Arc<Notify>,
    attempts: TaskTracker,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Dispatcher {
    /// A dispatcher for `settings.webhooks`, trusting the web's roots and the deployment's
    /// root `ca`.
    pub fn new(
        settings: &RelaySettings,
        deliveries: Deliveries,
        ca: &std::path::Path,
        metrics: WebhookMetrics,
        clock: Arc<dyn Clock>,
        written: Arc<Notify>,
    ) -> Result<Self, ConfigError> {
        let mut targets = BTreeMap::new();
        for (name, endpoint) in &settings.webhooks {
            let url = reqwest::Url::parse(&endpoint.url)
                .map_err(|e| ConfigError::Invalid(format!("webhook endpoint `{name}`: {e}")))?;
            let mut builder = ctr_pki::reqwest_builder_for_receivers(ca)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?
                .timeout(settings.webhook_timeout)
                .connect_timeout(settings.webhook_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("ctr-relay/", env!("CARGO_PKG_VERSION")));
            if !endpoint.allow_private {
                builder = builder.dns_resolver(GuardedResolver);
            }
            let client = builder.build().map_err(|e| {
                ConfigError::Invalid(format!("the webhook client could not be built: {e}"))
            })?;
            targets.insert(
                name.clone(),
                Target {
                    url,
                    secret_file: endpoint.secret_file.clone(),
                    client,
                },
            );
        }
        Ok(Self {
            deliveries,
            targets,
            slots: Arc::new(Semaphore::new(settings.webhook_concurrency)),
            timeout: settings.webhook_timeout,
            retry_first: settings.webhook_retry_first,
            retry_max: settings.webhook_retry_max,
            window_ms: millis(settings.webhook_retry_for),
            retention_ms: millis(settings.webhook_retention),
            metrics,
            clock,
            written,
            attempts: TaskTracker::new(),
        })
    }

    /// Runs passes until `stopping` is cancelled, then waits for the attempts in flight up
    /// to their timeout (what is left, a lease running out hands to a replica or a restart).
    pub fn spawn(self: &Arc<Self>, stopping: CancellationToken) {
        if self.targets.is_empty() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let full = match this.pass().await {
                    Ok(full) => full,
                    Err(error) => {
                        tracing::warn!(%error, "webhook deliveries could not be claimed");
                        false
                    }
                };
                if full {
                    // Every slot was taken: wait for one before claiming more.
                    tokio::select! {
                        () = stopping.cancelled() => break,
                        permit = this.slots.acquire() => drop(permit),
                    }
                    continue;
                }
                tokio::select! {
                    () = stopping.cancelled() => break,
                    () = this.written.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
            this.attempts.close();
            let _ = tokio::time::timeout(this.timeout, this.attempts.wait()).await;
        });
    }

    /// Claims what is due, up to the free slots, and starts an attempt for each. Answers
    /// whether it took every free slot (more may be due).
    async fn pass(self: &Arc<Self>) -> Result<bool, ApiError> {
        let free = self.slots.available_permits();
        if free == 0 {
            return Ok(true);
        }
        // The lease outlasts an attempt: its timeout, and as long again for the outcome's write.
        let lease_ms = millis(self.timeout) * 2 + 1000;
        let claimed = self.deliveries.claim(free, lease_ms).await?;
        let took = claimed.len();
        for delivery in claimed {
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                break; // cannot happen: only this loop takes slots; the lease hands it on
            };
            let this = self.clone();
            self.attempts.spawn(async move {
                this.deliver(delivery).await;
                drop(slot);
            });
        }
        Ok(took == free)
    }

    /// One attempt of `delivery`, and its outcome written under its claim.
    async fn deliver(&self, delivery: Claimed) {
        let attempt = self.attempt(&delivery).await;
        let settled = self
            .deliveries
            .settle(&delivery, &attempt, self.window_ms)
            .await;
        let (event_id, endpoint) = (&delivery.event_id, &delivery.endpoint);
        match (&settled, &attempt) {
            (Ok(Settled::Delivered), Attempt::Delivered { status }) => {
                self.metrics.delivery(endpoint, "delivered");
                tracing::info!(
                    event_id,
                    endpoint,
                    status,
                    attempts = delivery.attempts + 1,
                    "webhook delivered"
                );
            }
            (
                Ok(outcome @ (Settled::Retried | Settled::Failed)),
                Attempt::NotDelivered {
                    error, retry_in_ms, ..
                },
            ) => {
                if *outcome == Settled::Failed {
                    self.metrics.delivery(endpoint, "failed");
                    tracing::error!(
                        event_id,
                        endpoint,
                        error,
                        attempts = delivery.attempts + 1,
                        "webhook delivery failed for good: redeliver it from the admin listener once the endpoint is fixed"
                    );
                } else {
                    self.metrics.delivery(endpoint, "retried");
                    tracing::warn!(
                        event_id,
                        endpoint,
                        error,
                        retry_in_ms,
                        "webhook not delivered; retried later"
                    );
                }
            }
            (Ok(_), _) => {
                tracing::warn!(
                    event_id,
                    endpoint,
                    "another dispatcher claimed this delivery meanwhile: its outcome stands"
                );
            }
            (Err(error), _) => {
                tracing::warn!(event_id, endpoint, %error, "a webhook attempt's outcome could not be written: the delivery is tried again once its lease runs out");
            }
        }
    }

    async fn attempt(&self, delivery: &Claimed) -> Attempt {
        let failed = |status: Option<u16>, error: String| Attempt::NotDelivered {
            status,
            error: error.chars().take(ERROR_TEXT).collect(),
            retry_in_ms: millis(doubling_backoff(
                self.retry_first,
                delivery.attempts,
                self.retry_max,
            )),
        };
        let Some(target) = self.targets.get(&delivery.endpoint) else {
            return failed(None, "the endpoint is no longer configured".into());
        };
        let secrets = match Secrets::read(&target.secret_file) {
            Ok(secrets) => secrets,
            Err(error) => return failed(None, error.to_string()),
        };
        let signed = match Signed::new(
            &delivery.event_id,
            self.clock.now_secs(),
            &delivery.body,
            &secrets,
        ) {
            Ok(signed) => signed,
            Err(error) => return failed(None, error.to_string()),
        };
        let sent = target
            .client
            .post(target.url.clone())
            .headers(signed.headers())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(delivery.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Attempt::Delivered {
                status: response.status().as_u16(),
            },
            Ok(response) => {
                let status = response.status();
                let what = if status.is_redirection() {
                    format!(
                        "answered {status}: redirects are not followed; configure the final URL"
                    )
                } else {
                    format!("answered {status}")
                };
                failed(Some(status.as_u16()), what)
            }
            Err(error) => failed(None, error_chain(&error)),
        }
    }

    /// Prunes ended deliveries and their events, and refreshes the gauges.
    pub async fn tidy(&self) {
        if let Err(error) = self
            .deliveries
            .prune(self.retention_ms, self.window_ms)
            .await
        {
            tracing::warn!(%error, "webhook deliveries could not be pruned");
        }
        match self.deliveries.backlog().await {
            Ok(backlog) => self.metrics.backlog(&backlog),
            Err(error) => tracing::warn!(%error, "the webhook backlog could not be read"),
        }
    }
}
