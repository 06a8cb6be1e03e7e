//! Orders and their checkout log as the relay models them; [`crate::store`] keeps them.

use ctr_money::Money;
use ctr_relay_api::CallFailure;
use ctr_service_kit::{CustomerId, OrderProcessingId, rfc3339};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Open,
    CheckingOut,
    Completed,
    Failed,
    Expired,
}

impl OrderStatus {
    const ALL: [Self; 5] = [
        Self::Open,
        Self::CheckingOut,
        Self::Completed,
        Self::Failed,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::CheckingOut => "checking_out",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// What happened to one token of a checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenOutcome {
    Pending,
    /// Its domain is being called (recorded before the call): a recovering relay calls again.
    Redeeming,
    Redeemed,
    /// Redeemed (or possibly redeemed), then reversed by compensation.
    Compensated,
    /// Its redemption failed.
    Failed,
    /// Never redeemed; its hold was released.
    Released,
    /// Redeemed (or possibly), and its domain refused for good to reverse it (the cancellation
    /// window closed, the hold belongs elsewhere, the domain lost it): an operator settles it.
    Unreversed,
}

impl TokenOutcome {
    const ALL: [Self; 7] = [
        Self::Pending,
        Self::Redeeming,
        Self::Redeemed,
        Self::Compensated,
        Self::Failed,
        Self::Released,
        Self::Unreversed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Redeeming => "redeeming",
            Self::Redeemed => "redeemed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
            Self::Released => "released",
            Self::Unreversed => "unreversed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Compensation is done with this step: nothing of it is left to release or reverse.
    pub fn settled_by_compensation(self) -> bool {
        matches!(self, Self::Compensated | Self::Released | Self::Unreversed)
    }
}

/// A token of the order as the relay recorded it (never the token itself).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TokenRecord {
    pub iss: String,
    pub jti: Uuid,
    pub capability: String,
    /// What the token paid toward the order (its signed `settles`).
    pub settles: Money,
    pub outcome: TokenOutcome,
}

/// Why a checkout failed: the capability whose redemption failed, and how.
#[derive(Debug, Clone)]
pub struct Failure {
    pub capability: String,
    pub call: CallFailure,
}

/// Why a checkout failed, as a client reads it: the domain's problem type or
/// `issuer-unavailable`, and words (never a URL or an error chain).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FailureView {
    /// The capability whose redemption failed.
    pub capability: String,
    /// The domain's problem type (`payment-declined`) or `issuer-unavailable`.
    pub reason: String,
    pub detail: String,
}

impl Failure {
    pub fn view(&self) -> FailureView {
        FailureView {
            capability: self.capability.clone(),
            reason: self.call.cause().to_owned(),
            detail: self.call.detail().to_owned(),
        }
    }
}

/// An order as a client sees it: never a token.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub order_processing_id: OrderProcessingId,
    pub customer_id: CustomerId,
    pub total: Money,
    pub status: OrderStatus,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: an order not checked out by then expires.
    pub expires_at: String,
    /// The checkout's tokens, in the order they are redeemed.
    pub tokens: Vec<TokenRecord>,
    /// What the tokens settle together.
    pub settled: Money,
    /// Why the checkout failed, once it has.
    pub failure: Option<FailureView>,
    /// Compensation of a failed checkout still runs (a domain was unreachable).
    pub compensation_pending: bool,
    /// A domain refused for good to reverse a redemption of this failed checkout: an operator
    /// settles it (`GET /admin/v1/orders/attention` lists such orders).
    pub needs_attention: bool,
    /// What needs attention, e.g. `points:redeem: cancellation-window-closed`.
    pub attention: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub id: OrderProcessingId,
    pub customer_id: CustomerId,
    pub total: Money,
    pub status: OrderStatus,
    pub created_at: i64,
    pub expires_at: i64,
    pub tokens: Vec<TokenRecord>,
    pub failure: Option<Failure>,
    /// Compensation not finished yet: the recovery worker keeps trying.
    pub compensation_pending: bool,
    /// Compensation ended with a step a domain would not reverse, or has been retried for
    /// longer than `CTR_COMPENSATION_ATTENTION_AFTER`.
    pub attention: Option<String>,
    /// Compensation passes that ended with something left to retry.
    pub compensation_attempts: i64,
    /// When compensation began, on the database's clock (milliseconds).
    pub compensation_since_ms: Option<i64>,
}

impl Order {
    /// A new open order.
    pub fn open(customer_id: CustomerId, total: Money, now: i64, ttl: i64) -> Self {
        Self {
            id: OrderProcessingId::generate(),
            customer_id,
            total,
            status: OrderStatus::Open,
            created_at: now,
            expires_at: now.saturating_add(ttl),
            tokens: Vec::new(),
            failure: None,
            compensation_pending: false,
            attention: None,
            compensation_attempts: 0,
            compensation_since_ms: None,
        }
    }

    /// The status as of `now`: an open order past its time is expired.
    pub fn status_at(&self, now: i64) -> OrderStatus {
        if self.status == OrderStatus::Open && now >= self.expires_at {
            OrderStatus::Expired
        } else {
            self.status
        }
    }

    /// The checkout has ended: nothing is left for a saga to do.
    pub fn ended(&self) -> bool {
        self.status != OrderStatus::CheckingOut && !self.compensation_pending
    }

    /// What the order's tokens settle together: the total, once a checkout was admitted.
    pub fn settled(&self) -> Money {
        self.tokens
            .iter()
            .try_fold(Money::zero(self.total.currency), |sum, t| {
                sum.checked_add(t.settles)
            })
            .unwrap_or(self.total)
    }

    /// What a client sees: never a token.
    pub fn view(&self, now: i64) -> OrderView {
        OrderView {
            order_processing_id: self.id.clone(),
            customer_id: self.customer_id.clone(),
            total: self.total,
            status: self.status_at(now),
            created_at: rfc3339(self.created_at),
            expires_at: rfc3339(self.expires_at),
            tokens: self.tokens.clone(),
            settled: self.settled(),
            failure: self.failure.as_ref().map(Failure::view),
            compensation_pending: self.compensation_pending,
            needs_attention: self.attention.is_some(),
            attention: self.attention.clone(),
        }
    }
}
