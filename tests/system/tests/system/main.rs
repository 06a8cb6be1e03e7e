#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod auth;
mod checkout;
mod config_reference;
mod crash_points;
mod domains;
mod dpop;
mod durability;
mod echo;
pub mod events;
mod fuzz;
mod idempotency;
mod kms;
mod limits;
mod oidc_interop;
mod openapi;
mod outage;
mod replicas;
mod saga;
mod settlement;
mod telemetry;
