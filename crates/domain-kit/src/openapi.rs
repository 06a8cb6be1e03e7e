//! The OpenAPI document of a domain: the kit's endpoints for ledger `L` (its request and hold
//! schemas from `L::Request` and `L::Hold`) plus the domain's own read endpoints.

use ctr_money::Money;
use ctr_relay_api::{CancelRequest, RedeemRequest};
use ctr_service_kit::openapi::{ApiDoc, Endpoint, Method, Param};
use utoipa::ToSchema;
use utoipa::openapi::schema::{AllOfBuilder, Schema};
use utoipa::openapi::{OpenApi, RefOr};
use uuid::Uuid;

use crate::{CustomerId, Ledger, OrderProcessingId};

/// The fields every domain's confirmation request has, beside the domain's own.
#[derive(ToSchema)]
#[allow(dead_code, reason = "a schema: ConfirmationRequest is what is decoded")]
struct ConfirmationCommon {
    /// The relay's order the token will be bound to.
    order_processing_id: OrderProcessingId,
    /// Optional: the customer is the access token's; if given, it must be that one (403
    /// `customer-mismatch` otherwise).
    customer_id: Option<CustomerId>,
}

/// The fields of every answer about a hold, beside the domain's summary.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "a schema: the answer is HoldReply with HoldDetails"
)]
struct HoldCommon {
    jti: Uuid,
    /// The hold's state in the domain's words (`held`, `redeemed`, `cancelled`, `expired`;
    /// payments: `authorized`, `captured`, `voided`, `refunded`).
    status: String,
    order_processing_id: OrderProcessingId,
    customer_id: CustomerId,
    /// Redemptions only: whether this answer repeats the first one.
    replayed: Option<bool>,
    /// RFC 3339: when an unredeemed hold is given back.
    hold_expires_at: String,
    /// What the token pays toward the order.
    settles: Money,
    /// Coupons: the order total the discount was computed on.
    priced_on: Option<Money>,
}

/// What a confirmation answers besides the hold.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "a schema: the confirmation handler adds these fields"
)]
struct Issued {
    /// The capability token: a compact ES384 JWS for the relay.
    token: String,
    /// RFC 3339: when the token stops being accepted.
    expires_at: String,
    /// What the token grants (`coupons:redeem`).
    capability: String,
}

/// One EC P-384 public key of the issuer.
#[derive(ToSchema)]
#[allow(dead_code, reason = "a schema of ctr_token::Jwk")]
struct Jwk {
    kty: String,
    crv: String,
    x: String,
    y: String,
    kid: String,
    #[schema(rename = "use")]
    use_: String,
    alg: String,
}

/// The issuer's public keys (RFC 7517).
#[derive(ToSchema)]
#[allow(dead_code, reason = "a schema of ctr_token::JwkSet")]
struct Jwks {
    keys: Vec<Jwk>,
}

fn all_of(parts: impl IntoIterator<Item = RefOr<Schema>>) -> RefOr<Schema> {
    let mut builder = AllOfBuilder::new();
    for part in parts {
        builder = builder.item(part);
    }
    builder.into()
}

/// The document of domain `L`; `reads` adds the domain's own endpoints.
pub fn openapi<L: Ledger>(reads: impl FnOnce(&mut ApiDoc)) -> OpenApi {
    let domain = L::DOMAIN;
    let base = format!("/service/v1/{domain}");
    let mut doc = ApiDoc::new(
        domain,
        "A ctr domain: it checks a customer's choice, places a hold and answers a short-lived \
         ES384 capability token; the relay redeems or cancels it over mutual TLS.",
    );
    let common = doc.schema::<ConfirmationCommon>();
    let request = doc.schema::<L::Request>();
    let confirmation = doc.named("ConfirmationRequest", all_of([common, request]));
    let hold_common = doc.schema::<HoldCommon>();
    let hold_details = doc.schema::<L::Hold>();
    let hold = doc.named("Hold", all_of([hold_common, hold_details]));
    let issued = doc.schema::<Issued>();
    let confirmed = doc.named("Confirmation", all_of([hold.clone(), issued]));
    let redeem = doc.schema::<RedeemRequest>();
    let cancel = doc.schema::<CancelRequest>();
    let jwks = doc.schema::<Jwks>();
    let mut token_problems = ctr_token::VerifyError::UNPROCESSABLE.to_vec();
    token_problems.extend(["invalid-order-processing-id", "invalid-customer-id"]);
    doc.idempotent_customer_endpoint(Endpoint {
        method: Method::Post,
        path: format!("{base}/confirmations"),
        operation_id: "confirm".into(),
        summary: "Confirm a choice: hold it and answer a capability token",
        description: "The customer's choice is checked against the domain's rules; on success it \
                      is held until the token expires and the token is answered. Rate-limited per \
                      customer.",
        params: vec![],
        request: Some(confirmation),
        success: (201, "Held; the token is in `token`", confirmed),
        problems: vec![
            (
                404,
                vec![
                    "customer-not-found",
                    "coupon-not-found",
                    "payment-method-not-found",
                ],
            ),
            (
                409,
                vec!["coupon-exhausted", "coupon-reserved", "hold-contended"],
            ),
            (
                422,
                vec![
                    "invalid-order-processing-id",
                    "invalid-customer-id",
                    "invalid-amount",
                    "invalid-points",
                    "insufficient-points",
                    "coupon-expired",
                    "coupon-not-yet-valid",
                    "coupon-minimum-not-met",
                    "coupon-no-discount",
                    "coupon-not-for-customer",
                    "currency-mismatch",
                    "currency-not-supported",
                    "over-limit",
                ],
            ),
            (403, vec!["customer-mismatch"]),
            (429, vec!["rate-limited", "too-many-holds"]),
            (503, vec!["kms-unavailable"]),
        ],
    }, L::CONFIRM_SCOPE);
    doc.endpoint(Endpoint {
        method: Method::Post,
        path: format!("{base}/redemptions"),
        operation_id: "redeem".into(),
        summary: "Redeem a token (the relay only, over mutual TLS)",
        description: "Finds the hold by the token's `jti` and compares the token's SHA-256 with \
                      the one kept when the domain issued it (constant time): only that very \
                      token redeems. Then makes the hold final, once. A retry answers the first \
                      redemption with `replayed: true`.",
        params: vec![],
        request: Some(redeem),
        success: (
            200,
            "Redeemed (or the first redemption, replayed)",
            hold.clone(),
        ),
        problems: vec![
            (401, vec!["client-certificate-required", "token-not-issued"]),
            (402, vec!["payment-declined"]),
            (403, vec!["caller-not-authorized"]),
            (404, vec!["hold-not-found"]),
            (
                409,
                vec![
                    "customer-mismatch",
                    "hold-released",
                    "hold-contended",
                    "token-replayed",
                ],
            ),
            (410, vec!["hold-expired"]),
            (413, vec!["token-too-large"]),
            (422, token_problems),
            (503, vec!["store-unavailable"]),
        ],
    });
    doc.endpoint(Endpoint {
        method: Method::Post,
        path: format!("{base}/cancellations"),
        operation_id: "cancel".into(),
        summary: "Cancel a hold or reverse its redemption (the relay only, over mutual TLS)",
        description: "Gives a hold back, or undoes a redemption (compensation), once.",
        params: vec![],
        request: Some(cancel),
        success: (200, "Cancelled (or already)", hold.clone()),
        problems: vec![
            (401, vec!["client-certificate-required"]),
            (403, vec!["caller-not-authorized"]),
            (404, vec!["hold-not-found"]),
            (
                409,
                vec![
                    "hold-mismatch",
                    "cancellation-window-closed",
                    "hold-contended",
                ],
            ),
            (422, vec!["invalid-order-processing-id"]),
        ],
    });
    doc.customer_endpoint(
        Endpoint {
            method: Method::Get,
            path: format!("{base}/holds/{{jti}}"),
            operation_id: "hold".into(),
            summary: "A hold by its token's jti",
            description: "The hold's state and what it reserved; only the customer's own (another \
                      customer's answers 404).",
            params: vec![Param::uuid("jti", "The token's `jti`")],
            request: None,
            success: (200, "The hold", hold),
            problems: vec![(404, vec!["hold-not-found"]), (422, vec!["invalid-jti"])],
        },
        L::READ_SCOPE,
    );
    doc.endpoint(Endpoint {
        method: Method::Get,
        path: "/.well-known/jwks.json".into(),
        operation_id: "jwks".into(),
        summary: "The issuer's public keys",
        description: "What the relay verifies this domain's tokens with.",
        params: vec![],
        request: None,
        success: (200, "The key set", jwks),
        problems: vec![(503, vec!["kms-unavailable"])],
    });
    reads(&mut doc);
    doc.build()
}
