//! A statement that rides with the first transaction of a task: a request's DPoP proof is
//! recorded in the transaction the request writes anyway, instead of a transaction of its own.
//!
//! A service opens a [`Prelude`] scope around a request ([`Prelude::scope`]); whoever learns
//! the statement during the request sets it ([`Prelude::set`]). The next transaction the
//! request's task runs ([`crate::Store::transact`], or a single statement, which then becomes
//! a transaction) runs it first, in the same pipeline as its first statement: it must change
//! exactly one row, or the transaction fails with [`crate::StoreError::PreludeRefused`] and
//! writes nothing. Once that transaction commits, the prelude has been applied with it; if it
//! fails for another reason, the next transaction carries it. When the request ends, the
//! scope's owner reads the [`PreludeOutcome`] and runs a prelude that no transaction carried
//! on its own (a read, or a request refused before it wrote).

use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::Query;

tokio::task_local! {
    static CURRENT: Prelude;
}

/// The prelude of one scope (a request).
#[derive(Clone, Default)]
pub struct Prelude(Arc<Mutex<State>>);

#[derive(Default)]
enum State {
    #[default]
    Empty,
    Pending(Query),
    /// Handed to a transaction that has not ended yet.
    Running(Query),
    Committed,
    Refused,
}

/// What became of a scope's prelude.
#[derive(Debug, Clone, PartialEq)]
pub enum PreludeOutcome {
    /// None was set.
    None,
    /// No transaction carried it: the owner must run it.
    NotRun(Query),
    /// It committed with a transaction of the request.
    Committed,
    /// It changed no row: the transaction it rode with wrote nothing.
    Refused,
}

impl Prelude {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `future` with this prelude as its task's.
    pub async fn scope<F: Future>(&self, future: F) -> F::Output {
        CURRENT.scope(self.clone(), future).await
    }

    /// Sets the prelude of the current task's scope; `false` when the task has none.
    pub fn set(statement: Query) -> bool {
        CURRENT
            .try_with(|prelude| *prelude.0.lock() = State::Pending(statement))
            .is_ok()
    }

    pub fn outcome(&self) -> PreludeOutcome {
        match &*self.0.lock() {
            State::Empty => PreludeOutcome::None,
            State::Pending(statement) | State::Running(statement) => {
                PreludeOutcome::NotRun(statement.clone())
            }
            State::Committed => PreludeOutcome::Committed,
            State::Refused => PreludeOutcome::Refused,
        }
    }

    pub(crate) fn committed(&self) {
        *self.0.lock() = State::Committed;
    }

    pub(crate) fn refused(&self) {
        *self.0.lock() = State::Refused;
    }

    /// The transaction that carried it failed for another reason: the next one carries it.
    pub(crate) fn put_back(&self) {
        let mut state = self.0.lock();
        if let State::Running(statement) = &*state {
            *state = State::Pending(statement.clone());
        }
    }
}

/// The current task's pending prelude, handed to the transaction about to run.
pub(crate) fn take() -> Option<(Prelude, Query)> {
    CURRENT
        .try_with(|prelude| {
            let mut state = prelude.0.lock();
            let State::Pending(statement) = &*state else {
                return None;
            };
            let statement = statement.clone();
            *state = State::Running(statement.clone());
            Some((prelude.clone(), statement))
        })
        .ok()
        .flatten()
}

/// Whether the current task has a prelude waiting for a transaction.
pub(crate) fn pending() -> bool {
    CURRENT
        .try_with(|prelude| matches!(&*prelude.0.lock(), State::Pending(_)))
        .unwrap_or(false)
}
