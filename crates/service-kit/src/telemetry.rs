//! Logs and traces: `tracing` with JSON lines (text on a terminal), OpenTelemetry spans exported
//! over OTLP/HTTP only when an endpoint is configured, W3C trace context across hops.
//!
//! Spans follow the OpenTelemetry HTTP conventions: a server span `POST /service/v1/orders`
//! per request, a client span `POST` per outgoing call. The standard `OTEL_*` variables are
//! honoured: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) when `CTR_OTLP_ENDPOINT`
//! is unset, `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf` or `http/json`), `..._HEADERS`,
//! `..._TIMEOUT`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
//! `..._ARG`, `OTEL_BSP_*`, and `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` to
//! export nothing.

use std::io::IsTerminal;

use axum::extract::Request;
use axum::http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
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

/// Installs the global subscriber, logging to stderr. Call once, before the runtime starts.
pub fn init(service: &'static str, config: &ServerConfig) -> Result<Telemetry, ConfigError> {
    init_to(service, config, BoxMakeWriter::new(std::io::stderr))
}

/// [`init`] with the log lines written to `writer` (the load generator sends its in-process
/// services' lines to a file).
pub fn init_to(
    service: &'static str,
    config: &ServerConfig,
    writer: BoxMakeWriter,
) -> Result<Telemetry, ConfigError> {
    let filter = EnvFilter::try_new(&config.log).map_err(|e| ConfigError::Setting {
        setting: "CTR_LOG",
        reason: e.to_string(),
    })?;
    // The resource reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the service's own
    // name applies unless OTEL_SERVICE_NAME says otherwise.
    let mut resource = Resource::builder();
    if env_set("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let mut provider = SdkTracerProvider::builder().with_resource(resource.build());
    let exporter = exporter(config)?;
    let exporting = exporter.is_some();
    if let Some(exporter) = exporter {
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    // Spans become OpenTelemetry spans only when they are exported: building them for nobody
    // costs every request (attributes, ids, timings) and shows nowhere.
    let otel =
        exporting.then(|| tracing_opentelemetry::layer().with_tracer(provider.tracer(service)));
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // A line carries its event's own fields (each names its order, token or request), not
    // the fields of the span around it: those repeat the route three times over for
    // OpenTelemetry and would double every line.
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(writer).boxed()
    };
    // A second init (tests starting several services in one process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(Telemetry { provider })
}

fn env_set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The OTLP/HTTP span exporter, when an endpoint is configured and export is not disabled.
/// `CTR_OTLP_ENDPOINT` is a base URL (`/v1/traces` is appended); otherwise the exporter reads
/// the `OTEL_EXPORTER_OTLP_*` variables itself.
fn exporter(
    config: &ServerConfig,
) -> Result<Option<opentelemetry_otlp::SpanExporter>, ConfigError> {
    let disabled = env_set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env_set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let from_env = env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env_set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .is_some();
    let endpoint = config.otlp_endpoint();
    let setting = match endpoint {
        _ if disabled => return Ok(None),
        Some(_) => "CTR_OTLP_ENDPOINT",
        None if from_env => "OTEL_EXPORTER_OTLP_ENDPOINT",
        None => return Ok(None),
    };
    let invalid = |reason: String| ConfigError::Setting { setting, reason };
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(exporter_client(config).map_err(invalid)?);
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| invalid(e.to_string()))
}

/// The exporter's HTTP client, built here rather than by the exporter: an image has no system
/// certificate store to load. An `https://` collector is verified against the Mozilla roots
/// and our own root CA (a collector with a certificate from the private PKI), over TLS 1.3.
fn exporter_client(config: &ServerConfig) -> Result<reqwest::blocking::Client, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Ok(ours) = ctr_pki::load_certs(&config.tls_root) {
        for cert in ours {
            roots.add(cert).map_err(|e| e.to_string())?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(ctr_pki::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| format!("the exporter's HTTP client: {e}"))
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

/// The server span of one request, named `{method} {route}` as the OpenTelemetry HTTP
/// conventions say: method, route, path, request id; never the body or query.
pub(crate) fn request_span(request: &Request) -> Span {
    let method = crate::metrics::method_label(request.method());
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let request_id = request
        .headers()
        .get(crate::request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let caller_request_id = request
        .headers()
        .get(crate::request_id::CALLER_HEADER)
        .and_then(|v| v.to_str().ok());
    let span = tracing::info_span!(
        "request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        url.path = request.uri().path(),
        url.scheme = "https",
        http.response.status_code = tracing::field::Empty,
        request_id,
        caller_request_id,
    );
    adopt_remote_parent(&span, request.headers());
    span
}

/// Records an answer on a server or client span: its status, and an error for a 5xx.
pub(crate) fn record_response(span: &Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// The client span of one outgoing request (`POST`), as the HTTP conventions name it.
pub(crate) fn client_span(request: &reqwest::Request) -> Span {
    let url = request.url();
    let method = crate::metrics::method_label(request.method());
    tracing::info_span!(
        "call",
        otel.name = method,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        server.address = url.host_str().unwrap_or(""),
        server.port = url.port_or_known_default(),
        url.full = format!("{}://{}{}", url.scheme(), url.authority(), url.path()),
        http.response.status_code = tracing::field::Empty,
    )
}
