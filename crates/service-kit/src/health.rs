//! Readiness and health checks, registered by the service and read by the admin probes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::RwLock;
use serde::Serialize;

/// The outcome of one check: `Ok(detail)` passes, `Err(reason)` fails.
pub type CheckOutcome = Result<String, String>;

type Check = Arc<dyn Fn() -> CheckOutcome + Send + Sync>;

/// The checks of a service, and whether it is shutting down.
#[derive(Clone)]
pub struct Health {
    checks: Arc<RwLock<Vec<(String, Check)>>>,
    shutting_down: Arc<AtomicBool>,
    started: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            checks: Arc::default(),
            shutting_down: Arc::default(),
            started: Instant::now(),
        }
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("checks", &self.checks.read().len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckReport {
    pub name: String,
    pub status: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub status: &'static str,
    pub service: String,
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub checks: Vec<CheckReport>,
}

impl Health {
    /// Adds a readiness check; the service is ready once every check passes.
    pub fn register(
        &self,
        name: impl Into<String>,
        check: impl Fn() -> CheckOutcome + Send + Sync + 'static,
    ) {
        self.checks.write().push((name.into(), Arc::new(check)));
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn run(&self) -> Vec<CheckReport> {
        let checks: Vec<_> = self.checks.read().clone();
        let mut reports: Vec<CheckReport> = checks
            .iter()
            .map(|(name, check)| match check() {
                Ok(detail) => CheckReport {
                    name: name.clone(),
                    status: "pass",
                    detail,
                },
                Err(detail) => CheckReport {
                    name: name.clone(),
                    status: "fail",
                    detail,
                },
            })
            .collect();
        if self.is_shutting_down() {
            reports.push(CheckReport {
                name: "shutdown".into(),
                status: "fail",
                detail: "shutting down".into(),
            });
        }
        reports
    }

    pub fn report(&self, service: &str) -> HealthReport {
        let checks = self.run();
        let healthy = checks.iter().all(|c| c.status == "pass");
        HealthReport {
            status: if healthy { "healthy" } else { "unhealthy" },
            service: service.to_owned(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            checks,
        }
    }
}
