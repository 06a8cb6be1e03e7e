//! An OTLP/HTTP receiver in the test process: it keeps every span the services export (as
//! OTLP/JSON, `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`), for assertions on whole traces.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;

/// One exported span, flattened: its service, ids, name, kind and attributes.
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// `server`, `client`, `internal`...
    pub kind: String,
    pub attributes: serde_json::Map<String, Value>,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key)?.as_str()
    }
}

#[derive(Clone, Default)]
pub struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    pub port: u16,
}

fn kind(value: &Value) -> String {
    let names = [
        "unspecified",
        "internal",
        "server",
        "client",
        "producer",
        "consumer",
    ];
    match value {
        Value::Number(n) => n
            .as_u64()
            .and_then(|i| names.get(usize::try_from(i).ok()?))
            .copied()
            .unwrap_or("unspecified")
            .to_owned(),
        Value::String(s) => s.trim_start_matches("SPAN_KIND_").to_lowercase(),
        _ => "unspecified".into(),
    }
}

/// `[{key, value: {stringValue | intValue | ...}}]` as a map of plain JSON values.
fn attributes(list: &Value) -> serde_json::Map<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            let value = kv["value"].as_object()?.values().next()?.clone();
            Some((kv["key"].as_str()?.to_owned(), value))
        })
        .collect()
}

fn flatten(request: &Value) -> Vec<Span> {
    let mut spans = Vec::new();
    for resource in request["resourceSpans"].as_array().into_iter().flatten() {
        let service = attributes(&resource["resource"]["attributes"])
            .get("service.name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |key: &str| span[key].as_str().unwrap_or("").to_lowercase();
                spans.push(Span {
                    service: service.clone(),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_span_id: text("parentSpanId"),
                    name: span["name"].as_str().unwrap_or("").to_owned(),
                    kind: kind(&span["kind"]),
                    attributes: attributes(&span["attributes"]),
                });
            }
        }
    }
    spans
}

async fn traces(State(spans): State<Arc<Mutex<Vec<Span>>>>, body: Bytes) -> &'static str {
    if let Ok(request) = serde_json::from_slice::<Value>(&body) {
        spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(flatten(&request));
    }
    "{}"
}

impl Receiver {
    /// Listens on every interface (the containers reach it through the Docker host gateway).
    pub async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new()
            .route("/v1/traces", post(traces))
            .with_state(spans.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { spans, port }
    }

    /// The variables that point a service's exporter here, in the standard OTEL_ names.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://host.docker.internal:{}", self.port),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
        ]
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The spans of the trace holding a span that matches `find`, once that trace has spans
    /// from every one of `services` (or whatever it has after `wait`).
    pub async fn trace_of(
        &self,
        find: impl Fn(&Span) -> bool,
        services: &[&str],
        wait: std::time::Duration,
    ) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let spans = self.spans();
            let trace = spans
                .iter()
                .find(|s| find(s))
                .map(|s| s.trace_id.clone())
                .map(|id| {
                    spans
                        .iter()
                        .filter(|s| s.trace_id == id)
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let seen: BTreeSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
            if services.iter().all(|s| seen.contains(s)) || tokio::time::Instant::now() > deadline {
                return trace;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}
