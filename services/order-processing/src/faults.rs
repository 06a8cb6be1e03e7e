//! Where the crash and store-fault tests reach into the saga: a hook before and after each of
//! the checkout's store operations. A relay built without one (every deployed relay) pays one
//! `Option` check per operation.

use async_trait::async_trait;
use ctr_service_kit::ApiError;

/// One store operation of a checkout, in the order a saga writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaOp {
    /// An order opened (with the idempotency key it came with, if any): the first write of
    /// a customer's flow.
    Open,
    /// `open` to `checking_out`: the admission's claim.
    Begin,
    /// The tokens consumed and the checkout log written.
    Admit,
    /// An admission refused, the order given back.
    Reopen,
    /// Steps recorded: a step `redeeming` before its call (with the step before it), or a
    /// step's compensation.
    Steps,
    /// The last step `redeemed` and the order `completed`, in one write.
    Complete,
    /// A step `failed` and the order `failed`, in one write.
    Fail,
    /// Compensation's end (or its pause until the recovery worker retries).
    EndCompensation,
    /// A recovery worker's takeover.
    Claim,
}

/// A test's hold on the saga's store operations.
#[async_trait]
pub trait SagaFaults: Send + Sync {
    /// Before `op`: an error makes it fail as a store would, with nothing written.
    fn before(&self, op: SagaOp) -> Result<(), ApiError>;
    /// Once `op` is durable. A crash test never returns from here: the driver stops right
    /// after the write, as a process killed there would.
    async fn after(&self, op: SagaOp);
}
