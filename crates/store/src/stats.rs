//! What this process asked of its stores, for benchmarks: transactions handed over,
//! statements run, COMMITs (on SQLite one per group of transactions) and, on PostgreSQL, the
//! round trips to the server (a pipelined write and its answers count once).

use std::sync::atomic::{AtomicU64, Ordering};

static TRANSACTIONS: AtomicU64 = AtomicU64::new(0);
static STATEMENTS: AtomicU64 = AtomicU64::new(0);
static COMMITS: AtomicU64 = AtomicU64::new(0);
static ROUND_TRIPS: AtomicU64 = AtomicU64::new(0);
static RERUNS: AtomicU64 = AtomicU64::new(0);

/// Counts since the process started, over every store it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Operations handed to a store: [`crate::Store::transact`] and single statements.
    pub transactions: u64,
    pub statements: u64,
    /// COMMITs the database did: on SQLite one per group, on PostgreSQL one per transaction
    /// (a single statement commits itself).
    pub commits: u64,
    /// Round trips to a PostgreSQL server (none on SQLite).
    pub round_trips: u64,
    /// Pipelined operations run again because a guarded write did not hold.
    pub reruns: u64,
}

impl std::ops::Sub for StoreStats {
    type Output = Self;

    fn sub(self, before: Self) -> Self {
        Self {
            transactions: self.transactions.saturating_sub(before.transactions),
            statements: self.statements.saturating_sub(before.statements),
            commits: self.commits.saturating_sub(before.commits),
            round_trips: self.round_trips.saturating_sub(before.round_trips),
            reruns: self.reruns.saturating_sub(before.reruns),
        }
    }
}

pub fn stats() -> StoreStats {
    StoreStats {
        transactions: TRANSACTIONS.load(Ordering::Relaxed),
        statements: STATEMENTS.load(Ordering::Relaxed),
        commits: COMMITS.load(Ordering::Relaxed),
        round_trips: ROUND_TRIPS.load(Ordering::Relaxed),
        reruns: RERUNS.load(Ordering::Relaxed),
    }
}

pub(crate) fn transaction() {
    TRANSACTIONS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn statement() {
    STATEMENTS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn commit() {
    COMMITS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn round_trip() {
    ROUND_TRIPS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn rerun() {
    RERUNS.fetch_add(1, Ordering::Relaxed);
}
