//! Order events for the systems downstream, delivered as [Standard Webhooks 1.0]: what the
//! relay sends and what a receiver checks, written once for both sides.
//!
//! ```
//! use ctr_webhooks::{Event, EventType, OrderEvent, Secrets, Signed};
//!
//! let secrets = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let event = Event {
//!     kind: EventType::OrderCompleted,
//!     timestamp: "2026-12-06T12:00:00Z".into(),
//!     data: OrderEvent {
//!         order_processing_id: "op_0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e".into(),
//!         customer_id: "c_alice".into(),
//!         total: ctr_money::Money::checked(3999, ctr_money::Currency::parse("EUR")?).ok_or("too much")?,
//!         failure: None,
//!         attention: None,
//!     },
//! };
//! let body = serde_json::to_string(&event)?;
//! let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
//! let signed = Signed::new("evt_1", i64::try_from(now)?, &body, &secrets)?;
//! // The receiver's side: the same secret, the three headers, the body as it came.
//! let verified = secrets.verify(&signed.headers(), body.as_bytes())?;
//! assert_eq!(verified.kind, EventType::OrderCompleted);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [Standard Webhooks 1.0]: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md

mod address;
mod event;
mod secret;

pub use address::{AddressPolicy, GuardedResolver, refused_address};
pub use event::{Event, EventFailure, EventType, OrderEvent};
pub use secret::{Secrets, SecretsError, Signed, VerifyError, new_secret};

/// The headers of a delivery, as Standard Webhooks names them.
pub const WEBHOOK_ID: &str = standardwebhooks::HEADER_WEBHOOK_ID;
pub const WEBHOOK_TIMESTAMP: &str = standardwebhooks::HEADER_WEBHOOK_TIMESTAMP;
pub const WEBHOOK_SIGNATURE: &str = standardwebhooks::HEADER_WEBHOOK_SIGNATURE;
