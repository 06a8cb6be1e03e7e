//! The store's integration tests: what callers are told when the database fails under them.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod faults;
#[path = "../support/mod.rs"]
mod support;
