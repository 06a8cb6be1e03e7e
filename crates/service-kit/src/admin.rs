//! The admin listener's routes: probes, graceful shutdown and metrics.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{ApiError, ApiJson, Health, Metrics};

#[derive(Clone)]
pub(crate) struct AdminState {
    pub service: &'static str,
    pub health: Health,
    pub metrics: Metrics,
    /// Asks for a stop (as SIGTERM does): readiness fails, the listeners close after
    /// `CTR_SHUTDOWN_DELAY`.
    pub stop_requested: CancellationToken,
}

pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/v1/livez", get(livez))
        .route("/admin/v1/readyz", get(readyz))
        .route("/admin/v1/healthz", get(healthz))
        .route("/admin/v1/shutdown", post(shutdown))
        .route("/admin/v1/metrics", get(metrics))
        .with_state(state)
}

/// Alive while the process serves, draining included: only readiness fails on the way out,
/// so that an orchestrator's liveness probe never kills a pod that is finishing its work.
async fn livez(State(state): State<AdminState>) -> Response {
    ApiJson(json!({"status": "alive", "draining": state.health.is_shutting_down()})).into_response()
}

async fn readyz(State(state): State<AdminState>) -> Result<ApiJson<serde_json::Value>, ApiError> {
    let failing: Vec<_> = state
        .health
        .run()
        .into_iter()
        .filter(|c| c.status != "pass")
        .collect();
    if failing.is_empty() {
        return Ok(ApiJson(json!({"status": "ready"})));
    }
    let names: Vec<String> = failing
        .iter()
        .map(|c| format!("{} ({})", c.name, c.detail))
        .collect();
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not-ready",
        "Not ready",
        format!("failing: {}", names.join(", ")),
    )
    .with(
        "failing_checks",
        serde_json::to_value(&failing).unwrap_or_default(),
    ))
}

async fn healthz(State(state): State<AdminState>) -> Response {
    let report = state.health.report(state.service);
    let status = if report.status == "healthy" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, ApiJson(report)).into_response()
}

async fn shutdown(State(state): State<AdminState>) -> Response {
    tracing::info!("shutdown requested on the admin listener");
    state.stop_requested.cancel();
    (
        StatusCode::ACCEPTED,
        ApiJson(json!({"status": "shutting_down"})),
    )
        .into_response()
}

/// The scrape listener's one route (`CTR_METRICS_ADDR`): the metrics, nothing else.
pub(crate) fn scrape_router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Metrics>) -> Response {
    openmetrics(&metrics)
}

async fn metrics(State(state): State<AdminState>) -> Response {
    openmetrics(&state.metrics)
}

/// The registry as OpenMetrics text: what both the admin and the scrape listener answer.
fn openmetrics(metrics: &Metrics) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}
