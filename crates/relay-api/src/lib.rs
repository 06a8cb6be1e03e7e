//! The contract between the relay and the issuing domains, written once and used by both
//! sides: what the relay sends to `POST /service/v1/<domain>/redemptions` and
//! `.../cancellations`, what a domain answers, and why a call failed.
//!
//! ```
//! use ctr_relay_api::{CancelReason, CancelRequest, HoldReply};
//!
//! let cancel = CancelRequest {
//!     jti: uuid::Uuid::nil(),
//!     order_processing_id: "op_0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e".into(),
//!     reason: Some(CancelReason::CheckoutFailed),
//! };
//! let wire = serde_json::to_string(&cancel)?;
//! assert!(wire.contains(r#""reason":"checkout-failed""#));
//!
//! // The relay reads a domain's reply without its domain-specific summary.
//! let reply: HoldReply = serde_json::from_str(
//!     r#"{"jti": "00000000-0000-0000-0000-000000000000", "status": "captured",
//!         "order_processing_id": "op_x", "customer_id": "c_alice", "replayed": true,
//!         "amount": {"amount": 3999, "currency": "EUR"}}"#,
//! )?;
//! assert_eq!(reply.replayed, Some(true));
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::fmt;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `POST .../redemptions`: hand a token back to the domain that issued it, in the order
/// context the relay checked. Its `Debug` never shows the token.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// The compact JWS the customer confirmed (never logged).
    pub token: String,
    pub order_processing_id: String,
    pub customer_id: String,
}

impl fmt::Debug for RedeemRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedeemRequest")
            .field("token", &"<redacted>")
            .field("order_processing_id", &self.order_processing_id)
            .field("customer_id", &self.customer_id)
            .finish()
    }
}

/// Why the relay cancels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CancelReason {
    /// A later redemption of the same checkout failed: compensation.
    CheckoutFailed,
}

/// `POST .../cancellations`: release a hold or reverse its redemption.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub jti: Uuid,
    pub order_processing_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<CancelReason>,
}

/// A domain's answer about one hold: after a redemption, a cancellation or a read. `D` is the
/// domain's own summary (the amount, the points), flattened beside the common fields; the relay
/// reads it as [`IgnoredAny`], since it never interprets a domain's business data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldReply<D = IgnoredAny> {
    pub jti: Uuid,
    /// The hold's state in the domain's words (`held`, `redeemed`; payments say `captured`).
    pub status: String,
    pub order_processing_id: String,
    pub customer_id: String,
    /// Redemptions only: `true` when this answer repeats the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<bool>,
    #[serde(flatten)]
    pub details: D,
}

/// Why a call from the relay to a domain failed, as the relay records it on the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// The domain answered 4xx with this problem type: it refuses, and retrying would not help.
    Refused {
        problem_type: String,
        detail: String,
    },
    /// The domain could not be reached, timed out, or answered 5xx on every attempt.
    Unavailable,
}

impl CallFailure {
    /// The problem type a client sees as the checkout's `cause`.
    pub fn cause(&self) -> &str {
        match self {
            Self::Refused { problem_type, .. } => problem_type,
            Self::Unavailable => "issuer-unavailable",
        }
    }

    /// What a client may read about it: the domain's own words, or a stable sentence (never a
    /// URL or an error chain; those are logged).
    pub fn detail(&self) -> &str {
        match self {
            Self::Refused { detail, .. } => detail,
            Self::Unavailable => "the domain did not answer in time",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redeem_request_never_prints_its_token() {
        let request = RedeemRequest {
            token: "header.secret.signature".into(),
            order_processing_id: "op_x".into(),
            customer_id: "c_alice".into(),
        };
        let printed = format!("{request:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("op_x"));
    }

    #[test]
    fn requests_refuse_unknown_members() {
        let with_extra = r#"{"jti": "00000000-0000-0000-0000-000000000000",
            "order_processing_id": "op_x", "amount": 1}"#;
        assert!(serde_json::from_str::<CancelRequest>(with_extra).is_err());
        let bad_reason = r#"{"jti": "00000000-0000-0000-0000-000000000000",
            "order_processing_id": "op_x", "reason": "because"}"#;
        assert!(serde_json::from_str::<CancelRequest>(bad_reason).is_err());
    }
}
