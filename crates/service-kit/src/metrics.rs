//! Prometheus metrics: requests and latency by listener, method, route and status; problems
//! answered by type. Services register their own (business) metrics beside them.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: &'static str,
    pub method: String,
    pub route: String,
    pub status: u16,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// The problem type of an answer, left in its extensions by `ApiError` for [`Metrics::track`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProblemType(pub &'static str);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProblemLabels {
    pub listener: &'static str,
    pub status: u16,
    /// The problem type's slug: a closed set, written in the code.
    pub r#type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    /// A readiness check's name (`store`, `kms`, `customer-issuer`, ...): a closed set,
    /// registered by the service.
    check: String,
}

/// The registry of a service. Services may register their own metrics with [`Metrics::register`].
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    problems: Family<ProblemLabels, Counter>,
    pub(crate) certificate_expiry: crate::certificates::ExpiryFamily,
    /// The readiness checks, run again at each scrape ([`Self::watch_health`]).
    health: Arc<Mutex<Option<crate::Health>>>,
    checks: Family<CheckLabels, Gauge>,
    ready: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Buckets from 0.5 ms to 16 s, doubling.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ctr");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        let problems = Family::<ProblemLabels, Counter>::default();
        registry.register(
            "problems",
            "Problems (RFC 9457) answered, by status and type: every refusal and failure",
            problems.clone(),
        );
        let certificate_expiry = crate::certificates::ExpiryFamily::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When each TLS certificate in use expires (Unix time), by the files it is in (server, client), its role (leaf, chain, root) and subject",
            certificate_expiry.clone(),
        );
        let checks = Family::<CheckLabels, Gauge>::default();
        registry.register(
            "health_check",
            "Each readiness check of the service, as GET /admin/v1/readyz reports it at the scrape: 1 passing, 0 failing",
            checks.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when every readiness check passes (the service takes traffic), 0 otherwise",
            ready.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            requests,
            latency,
            problems,
            certificate_expiry,
            health: Arc::default(),
            checks,
            ready,
        }
    }
}

impl Metrics {
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry.lock().register(name, help, metric);
    }

    /// Reports `health`'s checks in `ctr_health_check` and `ctr_ready`, run at each scrape.
    pub(crate) fn watch_health(&self, health: &crate::Health) {
        *self.health.lock() = Some(health.clone());
    }

    pub fn encode(&self) -> String {
        let health = self.health.lock().clone();
        if let Some(health) = health {
            let reports = health.run();
            for report in &reports {
                self.checks
                    .get_or_create(&CheckLabels {
                        check: report.name.clone(),
                    })
                    .set(i64::from(report.status == "pass"));
            }
            self.ready
                .set(i64::from(reports.iter().all(|r| r.status == "pass")));
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry.lock());
        out
    }

    pub(crate) async fn track(
        State((metrics, listener)): State<(Self, &'static str)>,
        request: Request,
        next: Next,
    ) -> Response {
        let started = Instant::now();
        let method = method_label(request.method()).to_owned();
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
        let response = next.run(request).await;
        let status = response.status().as_u16();
        if let Some(ProblemType(slug)) = response.extensions().get::<ProblemType>() {
            metrics
                .problems
                .get_or_create(&ProblemLabels {
                    listener,
                    status,
                    r#type: slug,
                })
                .inc();
        }
        let labels = RequestLabels {
            listener,
            method,
            route,
            status,
        };
        metrics.requests.get_or_create(&labels).inc();
        metrics
            .latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        response
    }
}

/// The method as a label from a closed set: a made-up method must not create a series.
pub(crate) fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}
