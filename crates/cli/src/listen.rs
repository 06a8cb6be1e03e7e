//! `ctr listen`: an HTTPS receiver of the relay's order events. It verifies every delivery as
//! Standard Webhooks says (the three headers, a timestamp within five minutes, a `v1`
//! signature under one of the secrets in its secret file, read at every delivery so that a
//! rotation needs no restart), acknowledges a duplicate without printing it twice, prints one
//! JSON line per event on standard output, and lists what it received at `GET /events`.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ctr_pki::{ClientAuth, IdentityFiles};
use ctr_webhooks::{Event, Secrets, WEBHOOK_ID};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

/// How many events `GET /events` remembers (and duplicates are recognised among).
const REMEMBERED: usize = 10_000;

/// Where and how to listen.
#[derive(Debug, clap::Args)]
pub struct Listen {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8448")]
    addr: SocketAddr,
    /// This receiver's certificate chain (PEM, leaf first).
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// The `whsec_...` secrets deliveries must be signed with, one per line.
    #[arg(long)]
    secret_file: PathBuf,
}

/// One event as received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Received {
    pub webhook_id: String,
    pub event: Event,
}

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    events: VecDeque<Received>,
}

struct Receiver {
    secret_file: PathBuf,
    seen: Mutex<Seen>,
}

/// Serves until the process is stopped.
pub async fn run(listen: Listen, ca: PathBuf) -> Result<(), String> {
    let identity = IdentityFiles {
        cert: listen.cert,
        key: listen.key,
    };
    let tls =
        ctr_pki::server_config(&identity, ClientAuth::None, &ca).map_err(|e| e.to_string())?;
    // Refuse to start without a usable secret rather than refuse every delivery.
    Secrets::read(&listen.secret_file).map_err(|e| e.to_string())?;
    let receiver = Arc::new(Receiver {
        secret_file: listen.secret_file,
        seen: Mutex::new(Seen::default()),
    });
    let router = Router::new()
        .route("/webhooks", post(receive))
        .route("/events", get(events))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind(listen.addr)
        .await
        .map_err(|e| format!("{}: {e}", listen.addr))?;
    eprintln!(
        "listening for order events on https://{}/webhooks",
        listen.addr
    );
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
                .await;
        });
    }
}

/// A refusal as RFC 9457 problem JSON.
fn refused(status: StatusCode, slug: &str, detail: String) -> Response {
    let body = serde_json::json!({
        "type": format!("https://ctr.dev/problems/{slug}"),
        "title": "Delivery refused",
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let secrets = match Secrets::read(&receiver.secret_file) {
        Ok(secrets) => secrets,
        Err(error) => {
            eprintln!("ctr listen: {error}");
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "receiver-unavailable",
                error.to_string(),
            );
        }
    };
    let event = match secrets.verify(&headers, &body) {
        Ok(event) => event,
        Err(error) => {
            eprintln!("ctr listen: refused a delivery: {error}");
            return refused(
                StatusCode::BAD_REQUEST,
                "webhook-unverified",
                error.to_string(),
            );
        }
    };
    // Verified: the header is there.
    let webhook_id = headers
        .get(WEBHOOK_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let received = Received { webhook_id, event };
    let fresh = {
        let mut seen = receiver.seen.lock();
        let fresh = seen.ids.insert(received.webhook_id.clone());
        if fresh {
            seen.events.push_back(received.clone());
            if seen.events.len() > REMEMBERED
                && let Some(old) = seen.events.pop_front()
            {
                seen.ids.remove(&old.webhook_id);
            }
        }
        fresh
    };
    if fresh {
        println!("{}", serde_json::to_string(&received).unwrap_or_default());
    } else {
        eprintln!(
            "ctr listen: {} again (a retry): acknowledged, not printed twice",
            received.webhook_id
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    /// Only this order's events.
    order: Option<String>,
}

async fn events(
    State(receiver): State<Arc<Receiver>>,
    Query(query): Query<EventsQuery>,
) -> Response {
    let seen = receiver.seen.lock();
    let events: Vec<&Received> = seen
        .events
        .iter()
        .filter(|r| {
            query
                .order
                .as_ref()
                .is_none_or(|o| *o == r.event.data.order_processing_id)
        })
        .collect();
    axum::Json(events).into_response()
}
