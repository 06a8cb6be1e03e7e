#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
#![allow(
    clippy::result_large_err,
    reason = "figment::Jail closures return figment::Error"
)]

mod config;
mod helpers;
mod limits;
mod listeners;
mod probes;
mod problems;
mod renewal;
