//! A webhook receiver for the event tests: HTTPS on 127.0.0.1, it records every delivery as
//! it came (headers and body), checks it with the receiver's side of `ctr-webhooks`, and
//! answers as the test says: 204, an error status, or never (a hanging receiver). It can be
//! taken down and brought back on the same port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use ctr_service_kit::testing::TestPki;
use ctr_service_kit::{App, ClientAuth, Health, Metrics, Service};
use ctr_webhooks::{Event, Secrets, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
use order_processing::WebhookEndpoint;
use parking_lot::Mutex;

use crate::Running;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    /// 204.
    Accept,
    /// This status.
    Fail(u16),
    /// Never: the request waits until the receiver is taken down.
    Hang,
}

/// One delivery as it arrived.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    /// Its event, when it verified under the receiver's secret.
    pub event: Option<Event>,
    /// How the receiver answered it.
    pub answered: Answering,
}

struct Shared {
    secrets: Secrets,
    answering: Mutex<Answering>,
    got: Mutex<Vec<Delivery>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

pub struct Receiver {
    running: Option<Running>,
    addr: SocketAddr,
    pki_server: ctr_service_kit::ServerConfig,
    shared: Arc<Shared>,
    /// The `whsec_` secret, as the relay's secret file holds it.
    pub secret: String,
    dir: tempfile::TempDir,
}

impl Receiver {
    pub async fn start(pki: &TestPki) -> Self {
        let secret = ctr_webhooks::new_secret();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), format!("{secret}\n")).unwrap();
        let shared = Arc::new(Shared {
            secrets: Secrets::parse(&secret).unwrap(),
            answering: Mutex::new(Answering::Accept),
            got: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
        });
        let pki_server = pki.server_config("payments");
        let running = serve(&pki_server, shared.clone()).await;
        Self {
            addr: running.public,
            running: Some(running),
            pki_server,
            shared,
            secret,
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/webhooks", self.addr.port())
    }

    /// The relay's settings for this receiver (private addresses allowed: it is on loopback).
    pub fn endpoint(&self) -> WebhookEndpoint {
        WebhookEndpoint {
            url: self.url(),
            secret_file: self.secret_file(),
            allow_private: true,
        }
    }

    /// The relay's secret file for this receiver.
    pub fn secret_file(&self) -> PathBuf {
        self.dir.path().join("secret")
    }

    pub fn answer(&self, answering: Answering) {
        *self.shared.answering.lock() = answering;
    }

    /// Takes the receiver down: connections are refused until [`Self::bring_back`].
    pub async fn take_down(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    /// Serves again, on the same port.
    pub async fn bring_back(&mut self) {
        let mut server = self.pki_server.clone();
        server.public_addr = self.addr;
        self.running = Some(serve(&server, self.shared.clone()).await);
    }

    /// Every delivery so far, in the order they arrived.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.got.lock().clone()
    }

    /// The events it accepted, each once (by `webhook-id`), in the order first accepted.
    pub fn events(&self) -> Vec<(String, Event)> {
        let mut seen = std::collections::HashSet::new();
        self.deliveries()
            .into_iter()
            .filter(|d| d.answered == Answering::Accept)
            .filter_map(|d| Some((d.id.clone(), d.event?)))
            .filter(|(id, _)| seen.insert(id.clone()))
            .collect()
    }

    /// Waits up to `within` until it accepted `count` distinct events; answers them.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<(String, Event)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let events = self.events();
            if events.len() >= count || tokio::time::Instant::now() >= deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The most requests it held at once.
    pub fn most_in_flight(&self) -> usize {
        self.shared.most_in_flight.load(Ordering::SeqCst)
    }
}

async fn serve(server: &ctr_service_kit::ServerConfig, shared: Arc<Shared>) -> Running {
    let router = axum::Router::new()
        .route("/webhooks", axum::routing::post(receive))
        .with_state(shared);
    let app = App::build(
        Service {
            name: "webhook-receiver",
            client_auth: ClientAuth::None,
        },
        server,
        router,
        Health::default(),
        Metrics::default(),
    )
    .await
    .unwrap();
    Running::start(app)
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let answered = *shared.answering.lock();
    shared.got.lock().push(Delivery {
        id: header(WEBHOOK_ID),
        timestamp: header(WEBHOOK_TIMESTAMP),
        signature: header(WEBHOOK_SIGNATURE),
        body: String::from_utf8_lossy(&body).into_owned(),
        event: shared.secrets.verify(&headers, &body).ok(),
        answered,
    });
    match answered {
        Answering::Accept => StatusCode::NO_CONTENT,
        Answering::Fail(status) => StatusCode::from_u16(status).unwrap(),
        Answering::Hang => {
            let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            shared.most_in_flight.fetch_max(now, Ordering::SeqCst);
            // Counted out when the sender gives up (the request is dropped).
            let _held = Held(shared.clone());
            std::future::pending::<StatusCode>().await
        }
    }
}

struct Held(Arc<Shared>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
