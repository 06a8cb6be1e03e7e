//! The relay's public API: thin handlers over [`Relay`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ctr_money::Money;
use ctr_service_kit::idempotency::{Answer, REPLAYED};
use ctr_service_kit::openapi::{ApiDoc, Endpoint, Method, Param, Webhook};
use ctr_service_kit::{
    ApiError, ApiJson, Customer, CustomerAuth, CustomerId, Idempotent, OrderProcessingId, scopes,
};
use ctr_token::secs;
use serde::Deserialize;

use crate::checkout::{Caller, CheckoutOutcome, Relay, failure_problem};
use crate::orders::{Order, OrderView};
use crate::store::{DeliveryView, InsertError, Inserted, LIST_LIMIT};

/// The routes' names in the scope of an idempotency key.
const CREATE_ORDER: &str = "orders.create";
const CHECKOUT: &str = "orders.checkout";

/// A new order: the total its tokens must settle exactly. The buyer is the access token's
/// customer.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    /// Optional; when given it must be the access token's customer.
    #[serde(default)]
    customer_id: Option<CustomerId>,
    total: Money,
}

/// The tokens the customer confirmed, each answered by the domain that issued it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Checkout {
    /// Compact ES384 JWS tokens, at most one per capability.
    #[schema(min_items = 1, max_items = 8)]
    tokens: Vec<String>,
}

/// The relay's own routes on the admin listener (127.0.0.1 only): what an operator reads.
pub fn admin_router(relay: Arc<Relay>) -> Router {
    Router::new()
        .route("/admin/v1/orders/attention", get(orders_needing_attention))
        .route("/admin/v1/webhooks/deliveries", get(webhook_deliveries))
        .route("/admin/v1/webhooks/redeliveries", post(redeliver))
        .with_state(relay)
}

/// Which deliveries to list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryFilter {
    /// `pending`, `delivered` or `failed`; all when absent.
    #[serde(default)]
    state: Option<DeliveryState>,
    /// One endpoint's; all when absent.
    #[serde(default)]
    endpoint: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// Webhook deliveries, oldest event first (at most [`LIST_LIMIT`]): pending ones with their
/// next try and last error, failed ones to redeliver.
async fn webhook_deliveries(
    State(relay): State<Arc<Relay>>,
    filter: Result<axum::extract::Query<DeliveryFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<ApiJson<Vec<DeliveryView>>, ApiError> {
    let axum::extract::Query(filter) = filter.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            "The query is not acceptable",
            format!("`state` is pending, delivered or failed, `endpoint` a name: {e}"),
        )
    })?;
    let state = filter.state.map_or("", DeliveryState::as_str);
    let endpoint = filter.endpoint.unwrap_or_default();
    Ok(ApiJson(
        relay
            .webhooks
            .deliveries
            .list(state, &endpoint, LIST_LIMIT)
            .await?,
    ))
}

/// What to redeliver: the failed deliveries to `endpoint`, or only `event_id`'s.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Redelivery {
    endpoint: String,
    #[serde(default)]
    event_id: Option<String>,
}

/// Gives failed deliveries a new window of tries, due now.
async fn redeliver(
    State(relay): State<Arc<Relay>>,
    ApiJson(asked): ApiJson<Redelivery>,
) -> Result<ApiJson<serde_json::Value>, ApiError> {
    if !relay.settings.webhooks.contains_key(&asked.endpoint) {
        return Err(ApiError::not_found(
            "webhook-endpoint-unknown",
            format!(
                "`{}` is not a configured webhook endpoint (CTR_WEBHOOKS__<NAME>__URL)",
                asked.endpoint
            ),
        ));
    }
    let event_id = asked.event_id.unwrap_or_default();
    let redelivered = relay
        .webhooks
        .deliveries
        .redeliver(&asked.endpoint, &event_id)
        .await?;
    if redelivered == 0 && !event_id.is_empty() {
        return Err(ApiError::not_found(
            "webhook-delivery-not-failed",
            format!(
                "no failed delivery of `{event_id}` to `{}`: only failed deliveries are redelivered",
                asked.endpoint
            ),
        ));
    }
    tracing::info!(
        endpoint = asked.endpoint,
        event_id,
        redelivered,
        "webhook deliveries redelivered by an operator"
    );
    Ok(ApiJson(serde_json::json!({ "redelivered": redelivered })))
}

/// At most this many orders needing attention are listed at once.
const ATTENTION_PAGE: i64 = 100;

/// Failed checkouts a domain refused to compensate, oldest first: each needs an operator.
async fn orders_needing_attention(
    State(relay): State<Arc<Relay>>,
) -> Result<ApiJson<Vec<OrderView>>, ApiError> {
    let now = relay.clock.now_secs();
    let orders = relay.orders.needing_attention(ATTENTION_PAGE).await?;
    Ok(ApiJson(orders.iter().map(|o| o.view(now)).collect()))
}

pub fn router(relay: Arc<Relay>, customers: &CustomerAuth) -> Router {
    let customer_routes = Router::new()
        .route("/service/v1/orders", post(create_order))
        .route("/service/v1/orders/{id}", get(get_order))
        .route("/service/v1/orders/{id}/checkout", post(checkout))
        .with_state(relay);
    customers
        .protect(customer_routes)
        .merge(ctr_service_kit::openapi::routes(&openapi()))
}

/// The public API's OpenAPI document (served at `/service/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::new(
        "order-processing",
        "The ctr relay: it opens orders and checks them out with the capability tokens the \
         domains issued. It checks each token's envelope and that their amounts add up, then \
         has each domain redeem its own token, and cancels what was redeemed if a later \
         redemption fails.",
    );
    let new_order = doc.schema::<NewOrder>();
    let checkout = doc.schema::<Checkout>();
    let order = doc.schema::<OrderView>();
    let doc_id = doc.schema::<OrderProcessingId>();
    let mut token_problems = ctr_token::VerifyError::UNPROCESSABLE.to_vec();
    token_problems.extend([
        "invalid-order-processing-id",
        "settlement-sum-mismatch",
        "settlement-currency-mismatch",
        "settlement-priced-on-other-total",
        "capability-unbound",
    ]);
    let id = || Param::new("id", "The order's `order_processing_id`", doc_id.clone());
    doc.idempotent_customer_endpoint(Endpoint {
        method: Method::Post,
        path: "/service/v1/orders".into(),
        operation_id: "createOrder".into(),
        summary: "Open an order",
        description: "Opens an order for the access token's customer and a total; tokens are confirmed against its \
                      `order_processing_id`; `Location` is the order's URL. Rate-limited per customer.",
        params: vec![],
        request: Some(new_order),
        success: (201, "The open order", order.clone()),
        problems: vec![
            (403, vec!["customer-mismatch"]),
            (422, vec!["invalid-customer-id", "invalid-total"]),
            (429, vec!["rate-limited", "too-many-open-orders"]),
            (503, vec!["orders-at-capacity", "not-ready"]),
        ],
    }, scopes::ORDERS_WRITE);
    doc.customer_endpoint(Endpoint {
        method: Method::Get,
        path: "/service/v1/orders/{id}".into(),
        operation_id: "getOrder".into(),
        summary: "An order",
        description: "The order's status, its tokens' outcomes (never the tokens) and what they \
                      settled.",
        params: vec![id()],
        request: None,
        success: (200, "The order", order.clone()),
        problems: vec![
            (404, vec!["order-not-found"]),
            (422, vec!["invalid-order-processing-id"]),
        ],
    }, scopes::ORDERS_READ);
    doc.idempotent_customer_endpoint(Endpoint {
        method: Method::Post,
        path: "/service/v1/orders/{id}/checkout".into(),
        operation_id: "checkout".into(),
        summary: "Check an order out with its tokens",
        description: "Verifies every token's envelope (signature by its issuer's JWKS, audience, \
                      times, single use, the order it is bound to) and that the amounts add up to \
                      the total, then redeems each with its domain. A token bound to the \
                      customer's key (`cnf.jkt`) is checked out only by a request whose DPoP proof \
                      proves that key. 202 while the redemptions still run at the deadline \
                      (follow `Location`).",
        params: vec![id()],
        request: Some(checkout),
        success: (200, "The completed order", order.clone()),
        problems: vec![
            (401, vec!["capability-key-mismatch"]),
            (404, vec!["order-not-found"]),
            (
                409,
                vec![
                    "order-not-open",
                    "checkout-in-progress",
                    "redemption-refused",
                    "token-replayed",
                ],
            ),
            (413, vec!["token-too-large"]),
            (422, token_problems),
            (502, vec!["issuer-unavailable"]),
            (
                503,
                vec![
                    "issuer-keys-unavailable",
                    "shutting-down",
                    "checkout-interrupted",
                    "checkout-outcome-pending",
                ],
            ),
        ],
    }, scopes::ORDERS_WRITE);
    let event = doc.schema::<ctr_webhooks::Event>();
    for kind in ctr_webhooks::EventType::ALL {
        doc.webhook(Webhook {
            name: kind.as_str(),
            summary: kind.summary(),
            description: kind.description(),
            body: event.clone(),
        });
    }
    doc.build()
}

async fn create_order(
    customer: Customer,
    State(relay): State<Arc<Relay>>,
    request: Idempotent<NewOrder>,
) -> Result<Response, ApiError> {
    let customer = customer.scoped(scopes::ORDERS_WRITE)?;
    let key = relay.keys.scope(customer.id(), CREATE_ORDER, request.key)?;
    let request = request.body;
    customer.is(request.customer_id.as_ref())?;
    let customer_id = customer.id().clone();
    relay.rate.check(&customer_id)?;
    if request.total.amount == 0 {
        return Err(ApiError::invalid(
            "invalid-total",
            "`total.amount` must be at least 1",
        ));
    }
    let now = relay.clock.now_secs();
    let ttl = secs(relay.settings.order_ttl);
    let order = Order::open(customer_id, request.total, now, ttl);
    let id = order.id.clone();
    let answer = Answer::json(StatusCode::CREATED, Some(order_url(&id)), &order.view(now))?;
    let taken = key
        .as_ref()
        .map(|key| relay.keys.record(key, id.as_str(), Some(&answer), None));
    let inserted = relay
        .orders
        .insert(&order, now, taken)
        .await
        .map_err(|error| match error {
            InsertError::Full {
                capacity,
                retry_after,
            } => {
                tracing::warn!(capacity, "order store full");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "orders-at-capacity",
                    "Too many orders",
                    format!(
                        "the relay keeps at most {capacity} orders and none has passed its retention yet; retry later"
                    ),
                )
                .retry_after(retry_after)
            }
            InsertError::CustomerLimit { limit, retry_after } => ApiError::too_many(
                "too-many-open-orders",
                format!(
                    "this customer has {limit} open orders already; check one out or let it expire"
                ),
                retry_after,
            ),
            InsertError::Store(problem) => problem,
        })?;
    match (inserted, key) {
        (Inserted::KeyTaken, Some(key)) => relay.keys.replay(&key).await,
        _ => {
            tracing::info!(order_processing_id = %id, "order opened");
            Ok(answer.into_response())
        }
    }
}

/// Where an order is read.
fn order_url(id: &OrderProcessingId) -> String {
    format!("/service/v1/orders/{}", id.as_str())
}

/// One of the customer's orders; another customer's answers 404, so ids cannot be probed.
async fn get_order(
    customer: Customer,
    State(relay): State<Arc<Relay>>,
    Path(id): Path<String>,
) -> Result<ApiJson<OrderView>, ApiError> {
    let customer = customer.scoped(scopes::ORDERS_READ)?;
    let id = OrderProcessingId::parse(&id)?;
    let order = relay
        .orders
        .get(&id)
        .await?
        .filter(|order| &order.customer_id == customer.id())
        .ok_or_else(|| ApiError::not_found("order-not-found", "no such order"))?;
    Ok(ApiJson(order.view(relay.clock.now_secs())))
}

/// 200 with the completed order; a problem naming the failed capability; or, while the saga
/// still runs at the deadline, 202 with the order's URL in `Location` (never an error while
/// work goes on: a client that retried with a new order would pay twice).
async fn checkout(
    customer: Customer,
    State(relay): State<Arc<Relay>>,
    Path(id): Path<String>,
    request: Idempotent<Checkout>,
) -> Result<Response, ApiError> {
    let customer = customer.scoped(scopes::ORDERS_WRITE)?;
    let key = relay.keys.scope(customer.id(), CHECKOUT, request.key)?;
    let id = OrderProcessingId::parse(&id)?;
    let caller = Caller {
        customer: customer.id().clone(),
        key: customer.key_thumbprint().map(str::to_owned),
    };
    let outcome = relay.checkout(id, caller, request.body.tokens, key).await?;
    Ok(checkout_answer(outcome, relay.clock.now_secs()))
}

/// How a checkout's outcome is answered; a retry's (under its idempotency key) as the first
/// request's would be now, marked `Idempotent-Replayed: true`.
fn checkout_answer(outcome: CheckoutOutcome, now: i64) -> Response {
    match outcome {
        CheckoutOutcome::Replayed(first) => {
            let mut response = checkout_answer(*first, now);
            response
                .headers_mut()
                .insert(REPLAYED, header::HeaderValue::from_static("true"));
            response
        }
        CheckoutOutcome::Running(id, order) => {
            let location = order_url(&id);
            match order {
                Some(order) => (
                    StatusCode::ACCEPTED,
                    [(header::LOCATION, location)],
                    ApiJson(order.view(now)),
                )
                    .into_response(),
                // The order could not even be read: say that the outcome is pending, and where.
                None => (
                    [(header::LOCATION, location)],
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "checkout-outcome-pending",
                        "Checkout outcome pending",
                        "the checkout's outcome is not known yet: it is driven to its end from \
                         its log; poll the order at `Location`",
                    )
                    .retry_after(1),
                )
                    .into_response(),
            }
        }
        CheckoutOutcome::Finished(order) => match &order.failure {
            None => ApiJson(order.view(now)).into_response(),
            Some(failure) => failure_problem(&order, failure, now).into_response(),
        },
    }
}
