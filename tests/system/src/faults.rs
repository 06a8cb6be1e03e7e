//! A fault plan for the saga's store operations: fail one, crash right after one, or stall
//! after one until released. The operations are counted from 1 in the order the relay's
//! drivers reach them (the harness runs one checkout at a time per relay).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use ctr_service_kit::ApiError;
use order_processing::faults::{SagaFaults, SagaOp};
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Operation `n` fails as a store would (nothing written); the store is well again after.
    FailAt(usize),
    /// The driver stops for good right after operation `n` is durable, as a process killed
    /// there would.
    CrashAfter(usize),
    /// The driver stalls right after operation `n` (a paused process) until [`Plan::release`].
    StallAfter(usize),
    /// The driver panics at operation `n` (a bug), with nothing written.
    PanicAt(usize),
}

pub struct Plan {
    fault: Fault,
    count: AtomicUsize,
    done: AtomicUsize,
    last: AtomicUsize,
    triggered: AtomicBool,
    hit: Notify,
    release: Notify,
}

impl Plan {
    pub fn new(fault: Fault) -> Self {
        Self {
            fault,
            count: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            last: AtomicUsize::new(0),
            triggered: AtomicBool::new(false),
            hit: Notify::new(),
            release: Notify::new(),
        }
    }

    /// The fault planned.
    pub fn fault(&self) -> Fault {
        self.fault
    }

    /// Whether the fault happened (operation `n` was reached).
    pub fn triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    /// Every operation begun has returned to its driver (none is under way).
    pub fn quiet(&self) -> bool {
        self.done.load(Ordering::SeqCst) == self.count.load(Ordering::SeqCst)
    }

    /// Waits until the fault happened.
    pub async fn wait_triggered(&self) {
        loop {
            let hit = self.hit.notified();
            if self.triggered() {
                return;
            }
            hit.await;
        }
    }

    /// Lets a stalled driver go on.
    pub fn release(&self) {
        self.release.notify_one();
    }

    fn trigger(&self) {
        self.triggered.store(true, Ordering::SeqCst);
        self.hit.notify_waiters();
    }
}

#[async_trait]
impl SagaFaults for Plan {
    fn before(&self, op: SagaOp) -> Result<(), ApiError> {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        self.last.store(n, Ordering::SeqCst);
        if self.fault == Fault::PanicAt(n) {
            self.done.fetch_add(1, Ordering::SeqCst);
            self.trigger();
            panic!("injected panic at operation {n} ({op:?})");
        }
        if self.fault == Fault::FailAt(n) {
            self.done.fetch_add(1, Ordering::SeqCst);
            self.trigger();
            return Err(ApiError::internal(format!(
                "injected store fault at operation {n} ({op:?})"
            )));
        }
        Ok(())
    }

    async fn after(&self, _op: SagaOp) {
        let n = self.last.load(Ordering::SeqCst);
        match self.fault {
            Fault::CrashAfter(at) if at == n => {
                self.trigger();
                std::future::pending::<()>().await;
            }
            Fault::StallAfter(at) if at == n => {
                let released = self.release.notified();
                self.trigger();
                released.await;
            }
            _ => {}
        }
        self.done.fetch_add(1, Ordering::SeqCst);
    }
}
