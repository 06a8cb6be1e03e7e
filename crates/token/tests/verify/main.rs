#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod fixture;
mod fuzz;
mod golden;
mod interop;
mod rejects;
mod rotation;
