//! Logs and traces: `tracing` with JSON lines (text on a terminal), OpenTelemetry spans exported
//! over OTLP/HTTP only when an endpoint is configured, W3C trace context across hops.

use std::io::IsTerminal;

use axum::extract::Request;
use axum::http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{ConfigError, LogFormat, ServerConfig};

/// Flushes pending spans when dropped. Create and drop it outside the async runtime.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber. Call once, before the runtime starts.
pub fn init(service: &'static str, config: &ServerConfig) -> Result<Telemetry, ConfigError> {
    let filter = EnvFilter::try_new(&config.log).map_err(|e| ConfigError::Setting {
        setting: "CTR_LOG",
        reason: e.to_string(),
    })?;
    let mut provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build());
    if let Some(endpoint) = config.otlp_endpoint() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .build()
            .map_err(|e| ConfigError::Setting {
                setting: "CTR_OTLP_ENDPOINT",
                reason: e.to_string(),
            })?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    // A second init (tests starting several services in one process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(Telemetry { provider })
}

/// Makes the span of an incoming request a child of the caller's `traceparent`, if any.
pub fn adopt_remote_parent(span: &Span, headers: &HeaderMap) {
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(context);
}

/// Adds the current span's `traceparent` to outgoing headers.
pub fn inject_trace_context(headers: &mut HeaderMap) {
    let context = Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// The span of one request: method, route, request id; never the body or query.
pub(crate) fn request_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(
            || request.uri().path().to_owned(),
            |p| p.as_str().to_owned(),
        );
    let request_id = request
        .headers()
        .get(crate::request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let caller_request_id = request
        .headers()
        .get(crate::request_id::CALLER_HEADER)
        .and_then(|v| v.to_str().ok());
    let span = tracing::info_span!("request", method = %request.method(), route, request_id, caller_request_id, status = tracing::field::Empty);
    adopt_remote_parent(&span, request.headers());
    span
}
