//! `App::build` binds both listeners; `run_until_stopped` serves until a signal or
//! `POST /admin/v1/shutdown`, then drains.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use ctr_pki::{ClientAuth, IdentityFiles, PkiError, TlsFiles};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::admin::{self, AdminState};
use crate::config::{ConfigError, ServerConfig};
use crate::problem::{method_not_allowed, not_found};
use crate::serve::{ConnectionLimits, serve};
use crate::{ApiError, Health, Metrics, request_id, telemetry};

/// What the kit needs to know about a service.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    pub name: &'static str,
    /// Whether the public listener asks for client certificates (domains: optional, so
    /// that their consumer endpoints can require the relay's).
    pub client_auth: ClientAuth,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("TLS: {0}")]
    Tls(#[from] PkiError),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Service(String),
    #[error("{0}")]
    Store(String),
}

/// A service with both listeners bound, ready to run.
pub struct App {
    service: Service,
    public: TcpListener,
    admin: TcpListener,
    public_tls: std::sync::Arc<rustls::ServerConfig>,
    admin_tls: std::sync::Arc<rustls::ServerConfig>,
    public_router: Router,
    admin_router: Router,
    /// `CTR_METRICS_ADDR`: the scrape listener and its router, when configured.
    scrape: Option<(TcpListener, Router)>,
    health: Health,
    /// Cancelled when a stop is asked for (SIGTERM, Ctrl-C, `POST /admin/v1/shutdown`):
    /// readiness fails at once, the listeners stop `delay` later.
    requested: CancellationToken,
    /// Cancelled when the public listeners stop accepting and drain.
    shutdown: CancellationToken,
    delay: Duration,
    grace: Duration,
    limits: ConnectionLimits,
    /// What the service finishes after its listeners stopped, before the process exits.
    drains: Vec<futures::future::BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("service", &self.service.name)
            .finish_non_exhaustive()
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

impl App {
    /// Loads the TLS identity, binds the public and the admin listener and assembles the
    /// middleware around `routes`.
    pub async fn build(
        service: Service,
        config: &ServerConfig,
        routes: Router,
        health: Health,
        metrics: Metrics,
    ) -> Result<Self, StartError> {
        Self::build_with_admin(service, config, routes, Router::new(), health, metrics).await
    }

    /// As [`Self::build`], with routes of the service's own on the admin listener (under
    /// `/admin/v1/`, for operators: never reachable from the public listener).
    pub async fn build_with_admin(
        service: Service,
        config: &ServerConfig,
        routes: Router,
        admin_routes: Router,
        health: Health,
        metrics: Metrics,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let identity = IdentityFiles {
            cert: config.tls_cert.clone(),
            key: config.tls_key.clone(),
        };
        let tls = TlsFiles::load(&config.tls_root, Some(&identity))?;
        let public_tls = tls.server_config(service.client_auth)?;
        let admin_tls = tls.server_config(ClientAuth::None)?;
        crate::watch_certificates("server", &tls, config, &health, &metrics);
        metrics.watch_health(&health);
        let public = bind(config.public_addr).await?;
        let admin = bind(config.admin_addr).await?;
        let scrape = match config.metrics_addr {
            Some(addr) => Some((
                bind(addr).await?,
                stack(
                    admin::scrape_router(metrics.clone()),
                    config,
                    &metrics,
                    "metrics",
                ),
            )),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let requested = CancellationToken::new();
        let admin_state = AdminState {
            service: service.name,
            health: health.clone(),
            metrics: metrics.clone(),
            stop_requested: requested.clone(),
        };
        Ok(Self {
            service,
            public_router: stack(
                shed_load(routes, config.max_in_flight),
                config,
                &metrics,
                "public",
            ),
            admin_router: stack(
                admin::router(admin_state).merge(admin_routes),
                config,
                &metrics,
                "admin",
            ),
            scrape,
            public,
            admin,
            public_tls,
            admin_tls,
            health,
            requested,
            shutdown,
            delay: config.shutdown_delay,
            grace: config.shutdown_grace,
            limits: ConnectionLimits::from(config),
            drains: Vec::new(),
        })
    }

    /// Adds work that [`Self::run_until_stopped`] awaits once the listeners have stopped (the
    /// relay's running sagas), so that the process does not exit under it.
    #[must_use]
    pub fn on_drain(mut self, drain: impl Future<Output = ()> + Send + 'static) -> Self {
        self.drains.push(Box::pin(drain));
        self
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .unwrap_or_else(|_| unreachable!("a bound listener has an address"))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or_else(|_| unreachable!("a bound listener has an address"))
    }

    /// The scrape listener's address, when `CTR_METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.scrape.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Cancelled when the listeners stop accepting and drain; cancelling it stops them at
    /// once, without `CTR_SHUTDOWN_DELAY`.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until SIGTERM, Ctrl-C, `POST /admin/v1/shutdown` or the shutdown token, then
    /// drains. A stop asked for fails readiness at once and keeps serving for
    /// `CTR_SHUTDOWN_DELAY` (an orchestrator stops routing to it meanwhile); then the public
    /// listener stops accepting and drains, the service's own drains run (the relay's
    /// sagas), and the admin listener closes last: `livez` answers throughout, so a draining
    /// process is never taken for a dead one.
    pub async fn run_until_stopped(self) -> Result<(), StartError> {
        let public_addr = self.public_addr();
        let admin_addr = self.admin_addr();
        tracing::info!(service = self.service.name, %public_addr, %admin_addr, "listening");
        let token = self.shutdown.clone();
        let requested = self.requested.clone();
        let health = self.health.clone();
        let delay = self.delay;
        let signals = tokio::spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = requested.cancelled() => {}
                () = termination() => tracing::info!("termination signal received"),
            }
            health.begin_shutdown();
            if !token.is_cancelled() && !delay.is_zero() {
                tracing::info!(?delay, "not ready; serving on until the delay is over");
                tokio::select! {
                    () = token.cancelled() => {}
                    () = tokio::time::sleep(delay) => {}
                }
            }
            token.cancel();
        });
        let admin_stop = CancellationToken::new();
        let public = serve(
            "public",
            self.public,
            self.public_tls,
            self.public_router,
            self.limits,
            self.shutdown.clone(),
            self.grace,
        );
        let admin = serve(
            "admin",
            self.admin,
            self.admin_tls.clone(),
            self.admin_router,
            self.limits,
            admin_stop.clone(),
            self.grace,
        );
        let scrape = async {
            if let Some((listener, router)) = self.scrape {
                serve(
                    "metrics",
                    listener,
                    self.admin_tls,
                    router,
                    self.limits,
                    self.shutdown.clone(),
                    self.grace,
                )
                .await;
            }
        };
        let drains = self.drains;
        let public_side = async move {
            tokio::join!(public, scrape);
            futures::future::join_all(drains).await;
            admin_stop.cancel();
        };
        tokio::join!(public_side, admin);
        signals.abort();
        tracing::info!(service = self.service.name, "stopped");
        Ok(())
    }
}

async fn termination() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Load shedding: at most `max_in_flight` requests are worked on at once; one more is
/// answered 503 `overloaded` with `Retry-After` right away, instead of queueing behind them.
fn shed_load(routes: Router, max_in_flight: usize) -> Router {
    routes.layer(
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "Service overloaded",
                    "the service is at its limit of requests in flight; retry shortly",
                )
                .retry_after(1)
            }))
            .layer(tower::load_shed::LoadShedLayer::new())
            // One semaphore for every route (`Router::layer` wraps each route on its own).
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                max_in_flight,
            )),
    )
}

/// The middleware every listener gets, outermost last.
fn stack(
    routes: Router,
    config: &ServerConfig,
    metrics: &Metrics,
    listener: &'static str,
) -> Router {
    let timeout = config.request_timeout;
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            enforce_timeout(timeout, request, next)
        }))
        .layer(middleware::from_fn_with_state(
            (metrics.clone(), listener),
            Metrics::track,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(telemetry::request_span)
                .on_request(())
                .on_response(|response: &Response, _: Duration, span: &tracing::Span| {
                    telemetry::record_response(span, response.status().as_u16());
                })
                // A server error is logged once, by `log_answer`, with its route and problem.
                .on_failure(()),
        )
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            log_answer(listener, request, next)
        }))
        .layer(middleware::from_fn(request_id::middleware))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("a handler panicked").into_response()
        }))
}

/// At the default level a successful answer is not logged on its own: the handlers log each
/// step of a checkout once, naming its order and token, which is what tracing a checkout needs;
/// an access line more per request would double what is logged (and what Docker ships) for
/// nothing. Refusals are logged with their route, problem type and request id, server errors as
/// warnings; every answer at debug, and probes and scrapes only there.
async fn log_answer(listener: &'static str, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1e3;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let problem = response
        .extensions()
        .get::<crate::metrics::ProblemType>()
        .map(|p| p.0);
    let method = method.as_str();
    // The request id is read (a copy) only for a line that is written.
    match status {
        _ if listener != "public" => {
            tracing::debug!(listener, method, route, status, latency_ms, "answered");
        }
        500.. => tracing::warn!(
            method,
            route,
            status,
            problem,
            request_id = request_id::current(),
            latency_ms,
            "answered"
        ),
        400.. => tracing::info!(
            method,
            route,
            status,
            problem,
            request_id = request_id::current(),
            latency_ms,
            "refused"
        ),
        _ => tracing::debug!(
            method,
            route,
            status,
            request_id = request_id::current(),
            latency_ms,
            "answered"
        ),
    }
    response
}

async fn enforce_timeout(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request-timeout",
            "Request timed out",
            format!("the request did not complete within {timeout:?}"),
        )
        .into_response(),
    }
}
