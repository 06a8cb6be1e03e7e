//! Payments: methods that belong to customers, with a per-payment limit. Authorize at
//! confirmation, capture at redemption, void on cancel, refund after capture; one demo method
//! always declines at capture. The hold states are the payment's state machine:
//! `authorized → captured → refunded`, `authorized → voided`, `authorized → expired`.

use std::collections::HashMap;

use axum::http::StatusCode;
use ctr_domain_kit::{CustomerId, HoldState, Ledger, reference};
use ctr_money::Money;
use ctr_service_kit::ApiError;
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

#[derive(Debug, Default)]
pub struct Payments {
    methods: HashMap<String, PaymentMethod>,
}

#[derive(Debug, Deserialize)]
pub struct PaymentRequest {
    payment_method_id: String,
    amount: Money,
}

#[derive(Debug, Clone, Serialize)]
pub struct PaymentHold {
    pub payment_method_id: String,
    pub amount: Money,
}

impl Payments {
    pub fn from_seed(seed: Seed) -> Self {
        Self {
            methods: seed
                .methods
                .into_iter()
                .map(|m| (m.id.clone(), m))
                .collect(),
        }
    }
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Ledger for Payments {
    const DOMAIN: &'static str = "payments";
    const CAPABILITY: &'static str = "payments:capture";
    type Request = PaymentRequest;
    type Hold = PaymentHold;

    fn reserve(
        &mut self,
        customer: &CustomerId,
        request: PaymentRequest,
        _now: i64,
    ) -> Result<PaymentHold, ApiError> {
        let id = reference("payment_method_id", &request.payment_method_id)?;
        let amount = request.amount;
        // A method of another customer is answered like an unknown one: ids do not leak.
        let method = self
            .methods
            .get(&id)
            .filter(|m| m.customer_id == *customer)
            .ok_or_else(|| {
                ApiError::not_found(
                    "payment-method-not-found",
                    format!("customer `{customer}` has no payment method `{id}`"),
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
                    "`amount.currency` must be {} for `{id}`",
                    method.limit.currency
                ),
            ));
        }
        if amount.amount > method.limit.amount {
            return Err(ApiError::invalid(
                "over-limit",
                format!("{amount} is over the limit of {} for `{id}`", method.limit),
            ));
        }
        Ok(PaymentHold {
            payment_method_id: id,
            amount,
        })
    }

    fn release(&mut self, _hold: &PaymentHold) {
        // Voiding an authorization frees nothing in this model: limits are per payment.
    }

    fn apply(&mut self, hold: &PaymentHold) -> Result<(), ApiError> {
        match self.methods.get(&hold.payment_method_id) {
            Some(method) if method.declines_at_capture => Err(ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "payment-declined",
                "Payment declined",
                format!(
                    "the issuer declined the capture of {} on `{}`",
                    hold.amount, hold.payment_method_id
                ),
            )),
            Some(_) => Ok(()),
            None => Err(ApiError::internal("an authorized payment method vanished")),
        }
    }

    fn reverse(&mut self, _hold: &PaymentHold) {}

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
