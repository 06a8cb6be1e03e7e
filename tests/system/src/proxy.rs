//! Stand-ins between the relay and a domain, or a customer and a service, for faults no
//! service of ours makes by itself: a service that commits and dies before it answers, or a
//! gateway that loses the answer (the caller gets 502 and does not know what happened), and
//! a domain that cannot be reached for a few attempts (connections dropped at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ctr_service_kit::testing::TestPki;
use ctr_service_kit::{App, ClientAuth, Health, Metrics, Service};

use crate::Running;

/// Takes one from `left` if any is left.
fn take_one(left: &AtomicUsize) -> bool {
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// An HTTPS stand-in for a domain that forwards every request to it as the relay would (with
/// the relay's client certificate), and loses the next answers it is told to: the domain has
/// committed, and the relay hears 502, as from a domain that died before it answered.
pub struct AnswerLoser {
    pub running: Running,
    lose: Arc<AtomicUsize>,
    lost: Arc<AtomicUsize>,
}

/// The request headers a stand-in passes on, and the answer's.
const REQUEST_HEADERS: [&str; 3] = ["content-type", "authorization", "idempotency-key"];
const ANSWER_HEADERS: [&str; 4] = [
    "content-type",
    "location",
    "retry-after",
    "idempotent-replayed",
];

impl AnswerLoser {
    /// In front of `upstream`, a domain's base URL (`https://127.0.0.1:port`), for the relay.
    pub async fn start(pki: &TestPki, upstream: String) -> Self {
        Self::start_with(pki, upstream, pki.client(Some("order-processing"))).await
    }

    /// In front of `upstream`, a service's base URL, for customers: a gateway that loses the
    /// answers it is told to after the service committed (bearer tokens only: a DPoP proof
    /// names the service's URL).
    pub async fn for_customers(pki: &TestPki, upstream: String) -> Self {
        Self::start_with(pki, upstream, pki.client(None)).await
    }

    async fn start_with(pki: &TestPki, upstream: String, client: reqwest::Client) -> Self {
        let lose = Arc::new(AtomicUsize::new(0));
        let lost = Arc::new(AtomicUsize::new(0));
        let (to_lose, counted) = (lose.clone(), lost.clone());
        let forward = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (client, upstream) = (client.clone(), upstream.clone());
            let (to_lose, counted) = (to_lose.clone(), counted.clone());
            async move {
                let path = uri.path_and_query().map_or("/", |p| p.as_str());
                let mut request = client
                    .request(method, format!("{upstream}{path}"))
                    .body(body);
                for name in REQUEST_HEADERS {
                    for value in headers.get_all(name) {
                        request = request.header(name, value);
                    }
                }
                let Ok(answer) = request.send().await else {
                    return StatusCode::BAD_GATEWAY.into_response();
                };
                let status = answer.status();
                let passed: Vec<_> = ANSWER_HEADERS
                    .iter()
                    .filter_map(|name| Some((*name, answer.headers().get(*name)?.clone())))
                    .collect();
                let body = answer.bytes().await.unwrap_or_default();
                if take_one(&to_lose) {
                    counted.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::BAD_GATEWAY.into_response();
                }
                let mut response: Response = (status, body).into_response();
                for (name, value) in passed {
                    response.headers_mut().insert(name, value);
                }
                response
            }
        };
        let app = App::build(
            Service {
                name: "answer-loser",
                client_auth: ClientAuth::Optional,
            },
            &pki.server_config("payments"),
            axum::Router::new().route("/{*path}", axum::routing::any(forward)),
            Health::default(),
            Metrics::default(),
        )
        .await
        .unwrap();
        Self {
            running: Running::start(app),
            lose,
            lost,
        }
    }

    /// Loses the next `answers` answers (instead of any still to lose).
    pub fn lose_next(&self, answers: usize) {
        self.lose.store(answers, Ordering::SeqCst);
    }

    /// How many answers were lost so far.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }

    pub fn url(&self, path: &str) -> String {
        self.running.url(path)
    }
}

/// A TCP stand-in for a domain that drops the next connections it is told to at once (an
/// unreachable domain, for a few attempts), and forwards the others untouched (TLS passes
/// through: the relay still talks to the domain itself).
pub struct Unreachable {
    pub port: u16,
    refuse: Arc<AtomicUsize>,
}

impl Unreachable {
    /// In front of the domain listening on `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let refuse = Arc::new(AtomicUsize::new(0));
        let refusing = refuse.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if take_one(&refusing) {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { port, refuse }
    }

    /// Drops the next `connections` connections.
    pub fn refuse_next(&self, connections: usize) {
        self.refuse.store(connections, Ordering::SeqCst);
    }

    /// How many of the connections it was told to drop are still to come.
    pub fn still_refusing(&self) -> usize {
        self.refuse.load(Ordering::SeqCst)
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}
