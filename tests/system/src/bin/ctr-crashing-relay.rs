//! The relay as a process of its own, for the tests that crash it whole: every thread dies
//! with it, the store's owner thread included, wherever it is.
//!
//! `ctr-crashing-relay SETTINGS.json` runs the relay that `order_processing::build_with_faults`
//! builds from the `{"server": ..., "relay": ...}` in the file, and prints its public and admin
//! addresses on its first line. `CTR_TEST_ABORT_AFTER=N` aborts the process right after the
//! N-th store operation of its sagas is durable; `FAILPOINTS` arms the store's fail points
//! (`ctr-store::between-jobs=2*off->return` aborts inside the third group commit of more than one
//! transaction, after a job and before the next).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test tool fails loudly"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use ctr_service_kit::{ApiError, ServerConfig};
use ctr_token::SystemClock;
use order_processing::RelaySettings;
use order_processing::faults::{SagaFaults, SagaOp};

#[derive(serde::Deserialize)]
struct Settings {
    server: ServerConfig,
    relay: RelaySettings,
}

/// Aborts the process once the `at`-th operation is durable.
struct AbortAfter {
    at: usize,
    done: AtomicUsize,
}

#[async_trait]
impl SagaFaults for AbortAfter {
    fn before(&self, _: SagaOp) -> Result<(), ApiError> {
        Ok(())
    }

    async fn after(&self, _: SagaOp) {
        if self.done.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            std::process::abort();
        }
    }
}

fn main() {
    let file = std::env::args()
        .nth(1)
        .expect("usage: ctr-crashing-relay SETTINGS.json");
    let settings: Settings = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let faults = std::env::var("CTR_TEST_ABORT_AFTER").ok().map(|at| {
        Arc::new(AbortAfter {
            at: at.parse().unwrap(),
            done: AtomicUsize::new(0),
        }) as Arc<dyn SagaFaults>
    });
    let _failpoints = fail::FailScenario::setup();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let built = order_processing::build_with_faults(
                &settings.server,
                &settings.relay,
                Arc::new(SystemClock),
                faults,
            )
            .await
            .unwrap();
            println!("{} {}", built.app.public_addr(), built.app.admin_addr());
            built.app.run_until_stopped().await.unwrap();
        });
}
