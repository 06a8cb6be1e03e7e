//! What a domain plugs into the engine: its resources, the rules that guard them, and the
//! tables they live in.

use async_trait::async_trait;
use ctr_service_kit::ApiError;
use ctr_store::{Conn, Migration, StoreError};
use ctr_token::Settlement;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{CustomerId, HoldState};

/// A domain's resources (coupons, balances, payment methods) and the rules that guard them.
/// Every method runs inside the engine's transaction; a reservation is a conditional update
/// (never a read-then-write), so it holds across processes sharing one store. On SQLite the
/// transaction runs on the store's owner thread: a method awaits its statements and nothing
/// else (no network, no timer).
#[async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// The issuer name and URL segment: `coupons`.
    const DOMAIN: &'static str;
    /// The one capability this domain grants: `coupons:redeem`.
    const CAPABILITY: &'static str;
    /// The access-token scope a customer needs to confirm (place a hold).
    const CONFIRM_SCOPE: &'static str;
    /// The access-token scope a customer needs to read its holds and the domain's records.
    const READ_SCOPE: &'static str;
    /// The domain's own tables (versions from 100; the kit's holds table is version 1).
    const MIGRATIONS: &'static [Migration];

    /// The domain part of a confirmation request.
    type Request: DeserializeOwned + utoipa::ToSchema + Clone + Send + Sync + 'static;
    /// What a hold reserved; stored with the hold and answered as the confirmation's summary.
    type Hold: Clone + Serialize + DeserializeOwned + utoipa::ToSchema + Send + Sync + 'static;

    /// Loads the seed data when the domain's tables are empty; a store with data keeps it.
    async fn seed(&self, conn: &mut Conn) -> Result<(), StoreError>;
    /// Applies the domain's rules and reserves; a refusal names the field or rule (4xx).
    async fn reserve(
        &self,
        conn: &mut Conn,
        customer: &CustomerId,
        request: Self::Request,
        now: i64,
    ) -> Result<Self::Hold, ApiError>;
    /// Gives a reservation back (cancelled or expired before redemption).
    async fn release(
        &self,
        conn: &mut Conn,
        customer: &CustomerId,
        hold: &Self::Hold,
    ) -> Result<(), ApiError>;
    /// Makes a reservation final. May refuse (a card that declines).
    async fn apply(
        &self,
        conn: &mut Conn,
        customer: &CustomerId,
        hold: &Self::Hold,
    ) -> Result<(), ApiError>;
    /// Undoes an applied reservation (compensation).
    async fn reverse(
        &self,
        conn: &mut Conn,
        customer: &CustomerId,
        hold: &Self::Hold,
    ) -> Result<(), ApiError>;
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

/// A count or amount as the store keeps it (`BIGINT`).
pub fn to_sql(value: u64) -> Result<i64, ApiError> {
    i64::try_from(value).map_err(|_| ApiError::internal("a value does not fit the store"))
}

/// A stored count or amount, which is never negative.
pub fn from_sql(value: i64) -> Result<u64, ApiError> {
    u64::try_from(value).map_err(|_| ApiError::internal("the store holds a negative amount"))
}
