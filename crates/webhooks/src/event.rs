//! The events: one per order transition a downstream system cares about.

use ctr_money::Money;
use serde::{Deserialize, Serialize};

/// What happened to an order: each type is one of the document's `webhooks`, described there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventType {
    #[serde(rename = "order.completed")]
    OrderCompleted,
    #[serde(rename = "order.failed")]
    OrderFailed,
    #[serde(rename = "order.needs_attention")]
    OrderNeedsAttention,
    #[serde(rename = "order.attention_resolved")]
    OrderAttentionResolved,
}

impl EventType {
    pub const ALL: [Self; 4] = [
        Self::OrderCompleted,
        Self::OrderFailed,
        Self::OrderNeedsAttention,
        Self::OrderAttentionResolved,
    ];

    /// What happened, in a line.
    pub fn summary(self) -> &'static str {
        match self {
            Self::OrderCompleted => "An order completed",
            Self::OrderFailed => "An order failed",
            Self::OrderNeedsAttention => "A failed order needs an operator",
            Self::OrderAttentionResolved => "A failed order no longer needs an operator",
        }
    }

    /// What it means for a receiver.
    pub fn description(self) -> &'static str {
        match self {
            Self::OrderCompleted => "Every token was redeemed: the order is paid for.",
            Self::OrderFailed => {
                "A redemption failed (`data.failure` says which and its problem type); what was \
                 redeemed before it is being cancelled."
            }
            Self::OrderNeedsAttention => {
                "A domain refused for good to reverse a redemption, or its compensation has been \
                 retried past `CTR_COMPENSATION_ATTENTION_AFTER` (`data.attention` says what): \
                 an operator must settle it."
            }
            Self::OrderAttentionResolved => {
                "A failed order that needed attention does not any more: its compensation went \
                 through after all."
            }
        }
    }

    /// The name on the wire (`order.completed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderCompleted => "order.completed",
            Self::OrderFailed => "order.failed",
            Self::OrderNeedsAttention => "order.needs_attention",
            Self::OrderAttentionResolved => "order.attention_resolved",
        }
    }
}

/// A delivery's body: `{type, timestamp, data}`, as Standard Webhooks recommends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When the transition committed (RFC 3339, UTC). The same on every retry.
    pub timestamp: String,
    pub data: OrderEvent,
}

/// The order as the transition left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderEvent {
    pub order_processing_id: String,
    pub customer_id: String,
    pub total: Money,
    /// Why the checkout failed (`order.failed`, and the attention events of a failed order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<EventFailure>,
    /// What needs an operator (`order.needs_attention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<String>,
}

/// The failed redemption: which capability and the problem its domain answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventFailure {
    pub capability: String,
    /// The RFC 9457 problem type of the failure (`https://ctr.dev/problems/payment-declined`,
    /// or `.../issuer-unavailable`): the order's `failure.reason` is its last segment.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub detail: String,
}
