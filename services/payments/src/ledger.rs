//! Payments: methods that belong to customers, with a per-payment limit. Authorize at
//! confirmation, capture at redemption, void on cancel, refund after capture; one demo method
//! always declines at capture. The hold states are the payment's state machine:
//! `authorized → captured → refunded`, `authorized → voided`, `authorized → expired`.

use async_trait::async_trait;
use axum::http::StatusCode;
use ctr_domain_kit::{CustomerId, HoldState, Ledger, from_sql, reference, to_sql};
use ctr_money::{Currency, Money};
use ctr_service_kit::ApiError;
use ctr_store::{Conn, Migration, StoreError, query, query_as};
use ctr_token::Settlement;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentMethod {
    pub id: String,
    pub customer_id: CustomerId,
    /// The largest single payment, and its currency.
    pub limit: Money,
    /// A demo card that authorizes but fails capture, to show compensation.
    #[serde(default)]
    pub declines_at_capture: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub methods: Vec<PaymentMethod>,
}

/// The payment methods of the store, seeded from [`Seed`] when the store has none.
#[derive(Debug)]
pub struct Payments {
    seed: Seed,
}

/// Payments: the payment method, and the amount to authorize.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct PaymentRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    payment_method_id: String,
    amount: Money,
}

/// What a payment authorization reserved.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentHold {
    pub payment_method_id: String,
    pub amount: Money,
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 100,
    name: "payment methods",
    sql: include_str!("../migrations/0100_payment_methods.sql"),
}];

impl Payments {
    pub fn from_seed(seed: Seed) -> Self {
        Self { seed }
    }

    async fn method(&self, conn: &mut Conn, id: &str) -> Result<Option<PaymentMethod>, ApiError> {
        let row: Option<(String, String, i64, String, i64)> = query_as(
            "SELECT id, customer_id, limit_amount, currency, declines_at_capture \
             FROM payment_methods WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(conn)
        .await?;
        row.map(|(id, customer, limit, currency, declines)| {
            let corrupt = || ApiError::internal("a stored payment method is invalid");
            Ok(PaymentMethod {
                id,
                customer_id: CustomerId::parse(&customer).map_err(|_| corrupt())?,
                limit: Money::checked(
                    from_sql(limit)?,
                    Currency::parse(&currency).map_err(|_| corrupt())?,
                )
                .ok_or_else(corrupt)?,
                declines_at_capture: declines != 0,
            })
        })
        .transpose()
    }
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[async_trait]
impl Ledger for Payments {
    const DOMAIN: &'static str = "payments";
    const CAPABILITY: &'static str = "payments:capture";
    const CONFIRM_SCOPE: &'static str = ctr_service_kit::scopes::PAYMENTS_CONFIRM;
    const READ_SCOPE: &'static str = ctr_service_kit::scopes::PAYMENTS_READ;
    const MIGRATIONS: &'static [Migration] = MIGRATIONS;
    type Request = PaymentRequest;
    type Hold = PaymentHold;

    async fn seed(&self, conn: &mut Conn) -> Result<(), StoreError> {
        let (count,): (i64,) = query_as("SELECT COUNT(*) FROM payment_methods")
            .fetch_one(conn)
            .await?;
        if count > 0 {
            return Ok(());
        }
        for method in &self.seed.methods {
            query(
                "INSERT INTO payment_methods \
                 (id, customer_id, limit_amount, currency, declines_at_capture) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&method.id)
            .bind(method.customer_id.as_str())
            .bind(i64::try_from(method.limit.amount).unwrap_or(i64::MAX))
            .bind(method.limit.currency.as_str())
            .bind(i64::from(method.declines_at_capture))
            .execute(conn)
            .await?;
        }
        Ok(())
    }

    async fn reserve(
        &self,
        conn: &mut Conn,
        customer: &CustomerId,
        request: PaymentRequest,
        _now: i64,
    ) -> Result<PaymentHold, ApiError> {
        let id = reference("payment_method_id", &request.payment_method_id)?;
        let amount = request.amount;
        if conn.pipelined() && amount.amount > 0 {
            // The method's rules, checked by the server with the COMMIT: when they do not
            // hold, this runs again unpipelined and says which one failed.
            let fits = query(
                "SELECT id FROM payment_methods WHERE id = $1 AND customer_id = $2 \
                 AND currency = $3 AND limit_amount >= $4",
            )
            .bind(id.clone())
            .bind(customer.as_str())
            .bind(amount.currency.as_str())
            .bind(to_sql(amount.amount)?);
            conn.guarded(fits, 1).await?;
            return Ok(PaymentHold {
                payment_method_id: id,
                amount,
            });
        }
        // A method of another customer is answered like an unknown one: ids do not leak.
        let method = self
            .method(conn, &id)
            .await?
            .filter(|m| m.customer_id == *customer)
            .ok_or_else(|| {
                ApiError::not_found(
                    "payment-method-not-found",
                    "the customer has no payment method with this id",
                )
            })?;
        if amount.amount == 0 {
            return Err(ApiError::invalid(
                "invalid-amount",
                "`amount.amount` must be at least 1",
            ));
        }
        if amount.currency != method.limit.currency {
            return Err(ApiError::invalid(
                "currency-mismatch",
                format!(
                    "`amount.currency` must be {} for this payment method",
                    method.limit.currency
                ),
            ));
        }
        if amount.amount > method.limit.amount {
            return Err(ApiError::invalid(
                "over-limit",
                format!(
                    "`amount` is over this payment method's limit of {}",
                    method.limit
                ),
            ));
        }
        Ok(PaymentHold {
            payment_method_id: id,
            amount,
        })
    }

    async fn release(
        &self,
        _conn: &mut Conn,
        _customer: &CustomerId,
        _hold: &PaymentHold,
    ) -> Result<(), ApiError> {
        // Voiding an authorization frees nothing in this model: limits are per payment.
        Ok(())
    }

    async fn apply(
        &self,
        conn: &mut Conn,
        _customer: &CustomerId,
        hold: &PaymentHold,
    ) -> Result<(), ApiError> {
        let captures =
            query("SELECT id FROM payment_methods WHERE id = $1 AND declines_at_capture = 0")
                .bind(hold.payment_method_id.clone());
        if conn.guarded(captures, 1).await? {
            return Ok(());
        }
        match self.method(conn, &hold.payment_method_id).await? {
            Some(method) if method.declines_at_capture => Err(ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "payment-declined",
                "Payment declined",
                "the card issuer declined the capture",
            )),
            Some(_) => Ok(()),
            None => Err(ApiError::internal("an authorized payment method vanished")),
        }
    }

    async fn reverse(
        &self,
        _conn: &mut Conn,
        _customer: &CustomerId,
        _hold: &PaymentHold,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    fn settlement(hold: &PaymentHold) -> Settlement {
        Settlement::pays(hold.amount)
    }

    fn constraints(hold: &PaymentHold) -> serde_json::Value {
        serde_json::json!({
            "payment_method_ref": sha256_hex(&hold.payment_method_id),
            "amount_sha256": sha256_hex(&hold.amount.to_string()),
        })
    }

    fn state_name(state: HoldState) -> &'static str {
        match state {
            HoldState::Held => "authorized",
            HoldState::Redeemed => "captured",
            HoldState::Released => "voided",
            HoldState::Reversed => "refunded",
            HoldState::Expired => "expired",
        }
    }
}
