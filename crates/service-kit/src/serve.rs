//! The accept loop: TLS 1.3 handshakes with tokio-rustls, HTTP/1.1 and HTTP/2 with hyper, the
//! verified client certificate put into request extensions, bounded connections, and graceful
//! draining.
//!
//! Bounds on what one client can hold: at most `max_connections` connections per listener
//! (one more is closed as soon as it is accepted), a TLS handshake and a request head must
//! arrive within `header_read_timeout`, a connection with no request in flight for
//! `idle_timeout` is closed (HTTP/1 keep-alive and HTTP/2 alike), an HTTP/2 connection carries
//! at most `http2_max_streams` streams at once and must answer keep-alive pings.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::ServerConfig;

/// The client certificate chain the TLS handshake verified against our root (leaf first).
/// Present in request extensions only when the client presented one.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<[CertificateDer<'static>]>);

/// The connection limits of one listener, from [`ServerConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub http2_max_streams: u32,
    pub keep_alive_interval: Duration,
    pub keep_alive_timeout: Duration,
}

impl From<&ServerConfig> for ConnectionLimits {
    fn from(config: &ServerConfig) -> Self {
        Self {
            max_connections: config.max_connections,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            http2_max_streams: config.http2_max_streams,
            keep_alive_interval: config.keep_alive_interval,
            keep_alive_timeout: config.keep_alive_timeout,
        }
    }
}

/// Requests in flight on one connection, and when the last one began or ended.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        *self.last.lock() = Instant::now();
        ActivityGuard(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let since = *self.last.lock();
            let due = since + idle;
            if self.in_flight.load(Ordering::Acquire) == 0 && Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.max(Instant::now() + idle / 4)).await;
        }
    }
}

struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        *self.0.last.lock() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting (new
/// connections are refused) and gives in-flight requests `grace` to finish.
pub(crate) async fn serve(
    name: &'static str,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that opens a connection and never finishes its headers is dropped; so is an
    // HTTP/1 connection kept alive without a next request for as long.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .keep_alive_interval(Some(limits.keep_alive_interval))
        .keep_alive_timeout(limits.keep_alive_timeout);
    loop {
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(listener = name, %remote, max = limits.max_connections, "connection refused: at the connection limit");
            drop(stream);
            continue;
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let handshake = acceptor.accept(stream);
            let tls = match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(listener = name, %remote, %error, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(listener = name, %remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .filter(|certs| !certs.is_empty())
                .map(|certs| {
                    PeerCertificates(certs.iter().map(|c| c.clone().into_owned()).collect())
                });
            let activity = Arc::new(Activity {
                in_flight: AtomicUsize::new(0),
                last: Mutex::new(Instant::now()),
            });
            let tracked = activity.clone();
            let service = tower::service_fn(move |mut request: Request<Incoming>| {
                if let Some(peer) = &peer {
                    request.extensions_mut().insert(peer.clone());
                }
                let guard = tracked.begin();
                let router = router.clone();
                async move {
                    let response = router.oneshot(request).await;
                    drop(guard);
                    response
                }
            });
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(tls),
                TowerToHyperService::new(service),
            );
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => Some(ended),
                () = shutdown.cancelled() => None,
                () = activity.idle_for(limits.idle_timeout) => {
                    tracing::debug!(listener = name, %remote, "idle connection closed");
                    // Nothing is in flight: a peer that does not take the GOAWAY (an HTTP/2
                    // client that never acknowledges its ping) is not waited on for long.
                    connection.as_mut().graceful_shutdown();
                    let closing = tokio::time::timeout(limits.header_read_timeout, connection.as_mut());
                    if let Ok(Err(error)) = closing.await {
                        tracing::debug!(listener = name, %remote, %error, "connection ended with an error");
                    }
                    return;
                }
            };
            let ended = match ended {
                Some(ended) => ended,
                None => {
                    // Finish what is in flight, then close (HTTP/2 sends GOAWAY); the grace
                    // period bounds it.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(listener = name, %remote, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            ?grace,
            "in-flight requests did not finish within the grace period"
        );
    }
}
