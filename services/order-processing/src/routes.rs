//! The relay's public API: thin handlers over [`Relay`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ctr_money::Money;
use ctr_service_kit::{ApiError, ApiJson, CustomerId, OrderProcessingId};
use ctr_token::secs;
use serde::Deserialize;
use serde_json::Value;

use crate::checkout::{CheckoutOutcome, Relay, failure_problem};
use crate::orders::{InsertError, Order, OrderStatus};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrder {
    customer_id: String,
    total: Money,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkout {
    tokens: Vec<String>,
}

pub fn router(relay: Arc<Relay>) -> Router {
    Router::new()
        .route("/service/v1/orders", post(create_order))
        .route("/service/v1/orders/{id}", get(get_order))
        .route("/service/v1/orders/{id}/checkout", post(checkout))
        .with_state(relay)
}

async fn create_order(
    State(relay): State<Arc<Relay>>,
    ApiJson(request): ApiJson<NewOrder>,
) -> Result<(StatusCode, ApiJson<Value>), ApiError> {
    let customer_id = CustomerId::parse(&request.customer_id)?;
    relay.rate.check(&customer_id)?;
    if request.total.amount == 0 {
        return Err(ApiError::invalid(
            "invalid-total",
            "`total.amount` must be at least 1",
        ));
    }
    let now = relay.clock.now_secs();
    let ttl = secs(relay.settings.order_ttl);
    let order = Order {
        id: OrderProcessingId::generate(),
        customer_id,
        total: request.total,
        status: OrderStatus::Open,
        created_at: now,
        expires_at: now + ttl,
        tokens: Vec::new(),
        failure: None,
        checkout_started_at: None,
        compensation_pending: false,
        lease_until: None,
    };
    let view = order.view(now);
    let id = order.id.clone();
    relay
        .orders
        .insert(&order, now)
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
    tracing::info!(order_processing_id = %id, "order opened");
    Ok((StatusCode::CREATED, ApiJson(view)))
}

async fn get_order(
    State(relay): State<Arc<Relay>>,
    Path(id): Path<String>,
) -> Result<ApiJson<Value>, ApiError> {
    let id = OrderProcessingId::parse(&id)?;
    let order = relay
        .orders
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("order-not-found", "no such order"))?;
    Ok(ApiJson(order.view(relay.clock.now_secs())))
}

/// 200 with the completed order; a problem naming the failed capability; or, while the saga
/// still runs at the deadline, 202 with the order's URL in `Location` (never an error while
/// work goes on: a client that retried with a new order would pay twice).
async fn checkout(
    State(relay): State<Arc<Relay>>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<Checkout>,
) -> Result<Response, ApiError> {
    let id = OrderProcessingId::parse(&id)?;
    let outcome = relay.checkout(id, request.tokens).await?;
    let now = relay.clock.now_secs();
    match outcome {
        CheckoutOutcome::Running(order) => {
            let location = format!("/service/v1/orders/{}", order.id.as_str());
            Ok((
                StatusCode::ACCEPTED,
                [(header::LOCATION, location)],
                ApiJson(order.view(now)),
            )
                .into_response())
        }
        CheckoutOutcome::Finished(order) => match &order.failure {
            None => Ok(ApiJson(order.view(now)).into_response()),
            Some(failure) => Err(failure_problem(&order, failure, now)),
        },
    }
}
