//! The relay's business metrics, beside the kit's HTTP ones: checkouts by outcome,
//! compensations, and each redemption's latency by capability and outcome.

use std::time::Duration;

use ctr_service_kit::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Step {
    /// A capability of the relay's configuration (a closed set).
    capability: String,
    outcome: &'static str,
}

#[derive(Clone, Debug)]
pub struct RelayMetrics {
    checkouts: Family<Outcome, Counter>,
    compensations: Family<Step, Counter>,
    redemptions: Family<Step, Histogram, fn() -> Histogram>,
    needing_attention: Gauge,
    compensations_pending: Gauge,
    oldest_compensation: Gauge<f64, std::sync::atomic::AtomicU64>,
    interrupted: Family<Outcome, Counter>,
}

impl RelayMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            checkouts: Family::default(),
            compensations: Family::default(),
            redemptions: Family::new_with_constructor(ctr_service_kit::latency_histogram),
            needing_attention: Gauge::default(),
            compensations_pending: Gauge::default(),
            oldest_compensation: Gauge::default(),
            interrupted: Family::default(),
        };
        metrics.register(
            "compensations_pending",
            "Failed checkouts whose compensation a domain has not completed yet: the recovery worker retries them with backoff",
            this.compensations_pending.clone(),
        );
        metrics.register(
            "compensation_oldest_pending_seconds",
            "How long the oldest pending compensation has been retried (0 when none is), on the database's clock",
            this.oldest_compensation.clone(),
        );
        metrics.register(
            "orders_needing_attention",
            "Failed checkouts a domain refused to compensate for good: an operator settles them (GET /admin/v1/orders/attention)",
            this.needing_attention.clone(),
        );
        metrics.register(
            "sagas_interrupted",
            "Checkout drivers that stopped before the end, by cause: lease-lost (another driver took over) or store (a write failed); recovery resumes them",
            this.interrupted.clone(),
        );
        metrics.register(
            "checkouts",
            "Checkouts answered, by outcome: completed, failed, running (202), refused (a 4xx before any redemption)",
            this.checkouts.clone(),
        );
        metrics.register(
            "compensations",
            "Cancellations the relay asked for after a failed redemption, by capability and outcome",
            this.compensations.clone(),
        );
        metrics.register(
            "redemption_duration_seconds",
            "A domain's redemption of one token as the relay waited for it, retries included, by capability and outcome",
            this.redemptions.clone(),
        );
        // Exported at 0 from the start, so that rates and alerts see them before the first.
        for outcome in ["completed", "failed", "running", "refused", "replayed"] {
            drop(this.checkouts.get_or_create(&Outcome { outcome }));
        }
        for outcome in ["lease-lost", "store"] {
            drop(this.interrupted.get_or_create(&Outcome { outcome }));
        }
        this
    }

    pub fn checkout(&self, outcome: &'static str) {
        self.checkouts.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn compensation(&self, capability: &str, outcome: &'static str) {
        self.compensations
            .get_or_create(&Step {
                capability: capability.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn redemption(&self, capability: &str, outcome: &'static str, took: Duration) {
        self.redemptions
            .get_or_create(&Step {
                capability: capability.to_owned(),
                outcome,
            })
            .observe(took.as_secs_f64());
    }

    pub fn backlog(&self, backlog: &crate::store::Backlog) {
        self.needing_attention.set(backlog.needing_attention);
        self.compensations_pending
            .set(backlog.compensations_pending);
        #[allow(clippy::cast_precision_loss)] // milliseconds far below 2^52
        self.oldest_compensation
            .set(backlog.oldest_compensation_ms as f64 / 1000.0);
    }

    pub fn interrupted(&self, outcome: &'static str) {
        self.interrupted.get_or_create(&Outcome { outcome }).inc();
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Delivery {
    /// A configured endpoint's name (a closed set).
    endpoint: String,
    outcome: &'static str,
}

/// The webhook dispatcher's metrics.
#[derive(Clone, Debug)]
pub struct WebhookMetrics {
    attempts: Family<Delivery, Counter>,
    pending: Gauge,
    failed: Gauge,
    oldest_pending: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl WebhookMetrics {
    /// Registers them, each configured endpoint's attempts at 0 from the start.
    pub fn register(metrics: &Metrics, endpoints: &[String]) -> Self {
        let this = Self {
            attempts: Family::default(),
            pending: Gauge::default(),
            failed: Gauge::default(),
            oldest_pending: Gauge::default(),
        };
        metrics.register(
            "webhook_attempts",
            "Webhook delivery attempts, by endpoint and outcome: delivered (2xx), retried (anything else, tried again later), failed (its window of tries is over)",
            this.attempts.clone(),
        );
        metrics.register(
            "webhook_deliveries_pending",
            "Webhook deliveries not delivered yet, across replicas",
            this.pending.clone(),
        );
        metrics.register(
            "webhook_deliveries_failed",
            "Webhook deliveries whose window of tries is over: an operator redelivers them (POST /admin/v1/webhooks/redeliveries)",
            this.failed.clone(),
        );
        metrics.register(
            "webhook_oldest_pending_seconds",
            "How long the oldest pending webhook delivery has waited (0 when none does), on the database's clock",
            this.oldest_pending.clone(),
        );
        for endpoint in endpoints {
            for outcome in ["delivered", "retried", "failed"] {
                drop(this.attempts.get_or_create(&Delivery {
                    endpoint: endpoint.clone(),
                    outcome,
                }));
            }
        }
        this
    }

    pub fn delivery(&self, endpoint: &str, outcome: &'static str) {
        self.attempts
            .get_or_create(&Delivery {
                endpoint: endpoint.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn backlog(&self, backlog: &crate::store::DeliveryBacklog) {
        self.pending.set(backlog.pending);
        self.failed.set(backlog.failed);
        #[allow(clippy::cast_precision_loss)] // milliseconds far below 2^52
        self.oldest_pending
            .set(backlog.oldest_pending_ms as f64 / 1000.0);
    }
}
