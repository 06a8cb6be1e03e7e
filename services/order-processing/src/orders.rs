//! Order sessions and their store.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use ctr_money::Money;
use ctr_relay_api::CallFailure;
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
    /// What the token paid toward the order (its signed `settles`).
    pub settles: Money,
    pub outcome: TokenOutcome,
}

/// Why a checkout failed: the capability whose redemption failed, and how.
#[derive(Debug, Clone)]
pub struct Failure {
    pub capability: String,
    pub call: CallFailure,
}

impl Serialize for Failure {
    /// `{capability, reason, detail}`: the domain's problem type or `issuer-unavailable`, and
    /// words a client may read (never a URL or an error chain).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            capability: &'a str,
            reason: &'a str,
            detail: &'a str,
        }
        View {
            capability: &self.capability,
            reason: self.call.cause(),
            detail: self.call.detail(),
        }
        .serialize(serializer)
    }
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

    /// What the order's tokens settle together: the total, once a checkout was admitted.
    pub fn settled(&self) -> Money {
        self.tokens
            .iter()
            .try_fold(Money::zero(self.total.currency), |sum, t| {
                sum.checked_add(t.settles)
            })
            .unwrap_or(self.total)
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
            "settled": self.settled(),
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

/// The store holds as many orders as it may; none has reached its retention limit yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFull {
    pub capacity: usize,
}

/// Orders, behind a trait so a durable store can replace the in-memory one.
#[async_trait]
pub trait OrderStore: Send + Sync {
    /// Stores a new order, first dropping orders kept past their retention as of `now`.
    async fn insert(&self, order: Order, now: i64) -> Result<(), StoreFull>;
    async fn get(&self, id: &OrderProcessingId) -> Option<Order>;
    /// Moves an open, unexpired order to `checking_out`, atomically: one caller wins.
    async fn begin_checkout(&self, id: &OrderProcessingId, now: i64) -> Result<Order, BeginError>;
    /// Replaces the stored order.
    async fn save(&self, order: Order);
}

/// Orders in memory, bounded: an order is kept until `expires_at + retention` (longer while its
/// checkout runs), and at most `capacity` are kept at once.
#[derive(Debug)]
pub struct MemoryOrderStore {
    capacity: usize,
    retention: i64,
    state: Mutex<Orders>,
}

#[derive(Debug, Default)]
struct Orders {
    by_id: HashMap<OrderProcessingId, Order>,
    /// `(forget at, id)`, earliest first.
    forget: BTreeSet<(i64, OrderProcessingId)>,
}

impl MemoryOrderStore {
    /// `retention`: how long, in seconds, an order stays readable after its checkout window.
    pub fn new(capacity: usize, retention: i64) -> Self {
        Self {
            capacity,
            retention: retention.max(1),
            state: Mutex::default(),
        }
    }

    /// How many orders are kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().by_id.len()
    }
}

impl Orders {
    fn prune(&mut self, now: i64, retention: i64) {
        while let Some(first) = self.forget.first().filter(|(at, _)| *at <= now).cloned() {
            self.forget.remove(&first);
            let (_, id) = first;
            match self.by_id.get(&id).map(|order| order.status) {
                // A checkout still running finishes before its order can go.
                Some(OrderStatus::CheckingOut) => {
                    self.forget.insert((now + retention, id));
                }
                _ => {
                    self.by_id.remove(&id);
                }
            }
        }
    }
}

#[async_trait]
impl OrderStore for MemoryOrderStore {
    async fn insert(&self, order: Order, now: i64) -> Result<(), StoreFull> {
        let mut state = self.state.lock();
        state.prune(now, self.retention);
        if state.by_id.len() >= self.capacity {
            return Err(StoreFull {
                capacity: self.capacity,
            });
        }
        state.forget.insert((
            order.expires_at.saturating_add(self.retention),
            order.id.clone(),
        ));
        state.by_id.insert(order.id.clone(), order);
        Ok(())
    }

    async fn get(&self, id: &OrderProcessingId) -> Option<Order> {
        self.state.lock().by_id.get(id).cloned()
    }

    async fn begin_checkout(&self, id: &OrderProcessingId, now: i64) -> Result<Order, BeginError> {
        let mut state = self.state.lock();
        let order = state.by_id.get_mut(id).ok_or(BeginError::NotFound)?;
        match order.status_at(now) {
            OrderStatus::Open => {
                order.status = OrderStatus::CheckingOut;
                Ok(order.clone())
            }
            other => Err(BeginError::NotOpen(other)),
        }
    }

    async fn save(&self, order: Order) {
        let mut state = self.state.lock();
        // An order that was forgotten meanwhile stays forgotten.
        if let Some(stored) = state.by_id.get_mut(&order.id) {
            *stored = order;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(now: i64, ttl: i64) -> Order {
        Order {
            id: OrderProcessingId::generate(),
            customer_id: CustomerId::parse("c_alice").unwrap(),
            total: serde_json::from_value(json!({"amount": 100, "currency": "EUR"})).unwrap(),
            status: OrderStatus::Open,
            created_at: now,
            expires_at: now + ttl,
            tokens: Vec::new(),
            failure: None,
        }
    }

    #[tokio::test]
    async fn a_full_store_refuses_until_orders_pass_their_retention() {
        let store = MemoryOrderStore::new(2, 60);
        let first = order(0, 100);
        store.insert(first.clone(), 0).await.unwrap();
        store.insert(order(10, 100), 10).await.unwrap();
        assert_eq!(
            store.insert(order(20, 100), 20).await,
            Err(StoreFull { capacity: 2 }),
            "a third order does not fit while both are within ttl + retention"
        );
        assert_eq!(store.len(), 2, "the refused order was not stored");

        // 100 s of ttl + 60 s of retention after the first order opened, it is forgotten.
        store.insert(order(160, 100), 160).await.unwrap();
        assert!(
            store.get(&first.id).await.is_none(),
            "the first order was pruned"
        );
        assert_eq!(store.len(), 2);
    }

    #[tokio::test]
    async fn an_order_checking_out_is_kept_until_its_checkout_ends() {
        let store = MemoryOrderStore::new(10, 60);
        let running = order(0, 100);
        store.insert(running.clone(), 0).await.unwrap();
        let mut begun = store.begin_checkout(&running.id, 50).await.unwrap();

        store.insert(order(200, 100), 200).await.unwrap();
        assert!(
            store.get(&running.id).await.is_some(),
            "a checkout still running keeps its order past ttl + retention"
        );

        begun.status = OrderStatus::Completed;
        store.save(begun).await;
        store.insert(order(260, 100), 260).await.unwrap();
        assert!(
            store.get(&running.id).await.is_none(),
            "once finished, it goes one retention later"
        );
    }
}
