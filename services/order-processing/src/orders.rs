//! Order sessions and their store.

use std::collections::HashMap;

use async_trait::async_trait;
use ctr_money::Money;
use ctr_service_kit::{CustomerId, OrderProcessingId, rfc3339};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Open,
    CheckingOut,
    Completed,
    Failed,
    Expired,
}

/// What happened to one token of a checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenOutcome {
    Pending,
    Redeemed,
    /// Redeemed, then reversed by compensation.
    Compensated,
    /// Its redemption failed.
    Failed,
    /// Never redeemed; its hold was released.
    Released,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenRecord {
    pub iss: String,
    pub jti: Uuid,
    pub capability: String,
    pub outcome: TokenOutcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub capability: String,
    /// The problem type the domain answered, or the relay's own when the domain was unreachable.
    pub reason: String,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub id: OrderProcessingId,
    pub customer_id: CustomerId,
    pub total: Money,
    pub status: OrderStatus,
    pub created_at: i64,
    pub expires_at: i64,
    pub tokens: Vec<TokenRecord>,
    pub failure: Option<Failure>,
}

impl Order {
    /// The status as of `now`: an open order past its time is expired.
    pub fn status_at(&self, now: i64) -> OrderStatus {
        if self.status == OrderStatus::Open && now >= self.expires_at {
            OrderStatus::Expired
        } else {
            self.status
        }
    }

    /// The JSON a client sees: never a token.
    pub fn view(&self, now: i64) -> Value {
        json!({
            "order_processing_id": self.id,
            "customer_id": self.customer_id,
            "total": self.total,
            "status": self.status_at(now),
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "tokens": self.tokens,
            "failure": self.failure,
        })
    }
}

/// Why a checkout could not begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginError {
    NotFound,
    NotOpen(OrderStatus),
}

/// Orders, behind a trait so a durable store can replace the in-memory one.
#[async_trait]
pub trait OrderStore: Send + Sync {
    async fn insert(&self, order: Order);
    async fn get(&self, id: &OrderProcessingId) -> Option<Order>;
    /// Moves an open, unexpired order to `checking_out`, atomically: one caller wins.
    async fn begin_checkout(&self, id: &OrderProcessingId, now: i64) -> Result<Order, BeginError>;
    /// Replaces the stored order.
    async fn save(&self, order: Order);
}

#[derive(Debug, Default)]
pub struct MemoryOrderStore {
    orders: Mutex<HashMap<OrderProcessingId, Order>>,
}

#[async_trait]
impl OrderStore for MemoryOrderStore {
    async fn insert(&self, order: Order) {
        self.orders.lock().insert(order.id.clone(), order);
    }

    async fn get(&self, id: &OrderProcessingId) -> Option<Order> {
        self.orders.lock().get(id).cloned()
    }

    async fn begin_checkout(&self, id: &OrderProcessingId, now: i64) -> Result<Order, BeginError> {
        let mut orders = self.orders.lock();
        let order = orders.get_mut(id).ok_or(BeginError::NotFound)?;
        match order.status_at(now) {
            OrderStatus::Open => {
                order.status = OrderStatus::CheckingOut;
                Ok(order.clone())
            }
            other => Err(BeginError::NotOpen(other)),
        }
    }

    async fn save(&self, order: Order) {
        self.orders.lock().insert(order.id.clone(), order);
    }
}
