//! What a domain plugs into the engine: its resources and rules.

use ctr_service_kit::ApiError;
use ctr_token::Settlement;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{CustomerId, HoldState};

/// A domain's resources (coupons, balances, payment methods) and the rules that guard them.
/// The engine calls it under one lock, so a reservation sees every earlier one.
pub trait Ledger: Send + 'static {
    /// The issuer name and URL segment: `coupons`.
    const DOMAIN: &'static str;
    /// The one capability this domain grants: `coupons:redeem`.
    const CAPABILITY: &'static str;

    /// The domain part of a confirmation request.
    type Request: DeserializeOwned + Send + 'static;
    /// What a hold reserved; answered to the customer as the confirmation's summary.
    type Hold: Clone + Serialize + Send + Sync + 'static;

    /// Applies the domain's rules and reserves; a refusal names the field or rule (4xx).
    fn reserve(
        &mut self,
        customer: &CustomerId,
        request: Self::Request,
        now: i64,
    ) -> Result<Self::Hold, ApiError>;
    /// Gives a reservation back (cancelled or expired before redemption).
    fn release(&mut self, hold: &Self::Hold);
    /// Makes a reservation final. May refuse (a card that declines).
    fn apply(&mut self, hold: &Self::Hold) -> Result<(), ApiError>;
    /// Undoes an applied reservation (compensation).
    fn reverse(&mut self, hold: &Self::Hold);
    /// What the hold pays toward the order (and, for a discount, the total it was priced on):
    /// signed into the token as `settles` and `priced_on`.
    fn settlement(hold: &Self::Hold) -> Settlement;
    /// The domain-private `constraints` of the token: references and hashes only.
    fn constraints(hold: &Self::Hold) -> serde_json::Value;
    /// The domain's name for a state (payments: `authorized`, `captured`, ...).
    fn state_name(state: HoldState) -> &'static str {
        state.as_str()
    }
}
