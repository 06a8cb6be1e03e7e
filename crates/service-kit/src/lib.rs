//! One way to run a ctr service: a public and a private admin HTTPS listener (TLS 1.3 only),
//! probes, metrics, layered configuration, telemetry, and RFC 9457 problem+json errors.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use ctr_service_kit::{App, ClientAuth, Health, Metrics, ServerConfig, Service};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ServerConfig::defaults("hello");
//! let routes = Router::new().route("/service/v1/hello", get(|| async { "hello" }));
//! let app = App::build(Service { name: "hello", client_auth: ClientAuth::None }, &config, routes, Health::default(), Metrics::default()).await?;
//! println!("public {} admin {}", app.public_addr(), app.admin_addr());
//! app.run_until_stopped().await?;
//! # Ok(()) }
//! ```

mod admin;
mod app;
mod auth;
mod caller;
mod certificates;
mod client;
pub mod config;
mod health;
pub mod idempotency;
pub mod ids;
mod limits;
mod main_with;
mod metrics;
pub mod openapi;
mod problem;
mod proofs;
pub mod request_id;
mod serve;
pub mod settings_reference;
mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use app::{App, Service, StartError};
pub use auth::{Customer, CustomerAuth, scopes};
pub use caller::{RELAY_IDENTITY, RelayCaller};
pub use certificates::watch_certificates;
pub use client::{https_client, https_client_following, send_traced};
pub use config::{Config, ConfigError, ServerConfig, ServiceSettings};
pub use ctr_pki::ClientAuth;
pub use health::{CheckOutcome, CheckReport, Health, HealthReport};
pub use idempotency::{IdempotencyKeys, Idempotent};
pub use ids::{CustomerId, OrderProcessingId, reference, rfc3339};
pub use limits::CustomerRate;
pub use main_with::{admin_get, healthcheck, main_with};
pub use metrics::{Metrics, latency_histogram};
pub use problem::{ApiError, ApiJson, PROBLEM_BASE, seconds_until};
pub use serve::PeerCertificates;
pub use store::{open_store, with_kit_migrations};
