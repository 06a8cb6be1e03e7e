//! Every crash point and every store fault of a checkout, enumerated. For each scenario the
//! relay under test is crashed right after its n-th durable store operation (n = 1, 2, ...
//! until a checkout runs through without reaching it): its saga and every in-memory structure
//! are dropped with its runtime, the store is kept, its claims run out, and a relay started
//! afresh over the same store recovers. Then the same with the n-th operation failing as a
//! store would. After each case the invariants of the saga hold:
//!
//! - an order ends `completed` exactly when every step is `redeemed`, and then every hold is
//!   redeemed (the payment captured);
//! - a failed order has every hold released, reversed or expired, except steps left
//!   `unreversed`, which make the order need attention;
//! - no answer contradicts the order's end (200 means completed);
//! - no redemption is applied twice: the customer's points and the coupon's uses moved by
//!   exactly what the holds' final states say.
//!
//! Beside the relay's own faults, the scenarios bring the domains': an answer lost after the
//! domain committed (a domain dying between its commit and its answer, at a redemption or at
//! each cancellation), cancellations unreachable for several attempts and then back, and the
//! checkout's bound passing while a step is unwritten. And the relay that recovers is crashed
//! in turn, after each of its own writes, compensation's included.

use std::sync::Arc;
use std::time::Duration;

use ctr_domain_kit::{HoldState, Ledger};
use ctr_service_kit::ServerConfig;
use ctr_system_tests::faults::{Fault, Plan};
use ctr_system_tests::proxy::{AnswerLoser, Unreachable};
use ctr_system_tests::{
    ChildRelay, CrashableRelay, Domain, World, domain_settings, expire_claims, idempotency_key,
    outcomes, problem_type,
};
use order_processing::RelaySettings;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
enum Scenario {
    Success,
    DeclinedAtCapture,
    /// Payments' redemption endpoint refuses connections, for the crashed relay and the
    /// recovering one alike.
    CaptureUnreachable,
    /// Payments forgot the payment's hold before the checkout.
    HoldForgotten,
    /// The capture is declined and no domain reverses a redemption any more.
    CancellationWindowClosed,
    /// Payments captures and its answer is lost (it died before answering): the relay
    /// compensates what may have been applied.
    CaptureAnswerLost,
    /// The capture is declined, and the first answer of each cancellation is lost after the
    /// domain committed it: the retry must get the first result.
    CancellationAnswersLost,
    /// The capture is declined, and the points domain cannot be reached for its first
    /// cancellations: the compensation is retried, with backoff, until it gets through.
    CancellationsUnreachableForAWhile,
    /// The checkout's bound is as short as its deadline: a relay recovering after a crash
    /// finds it passed, with a step written `redeeming` and its outcome unknown.
    BoundPassed,
}

const SCENARIOS: [Scenario; 9] = [
    Scenario::Success,
    Scenario::DeclinedAtCapture,
    Scenario::CaptureUnreachable,
    Scenario::HoldForgotten,
    Scenario::CancellationWindowClosed,
    Scenario::CaptureAnswerLost,
    Scenario::CancellationAnswersLost,
    Scenario::CancellationsUnreachableForAWhile,
    Scenario::BoundPassed,
];

/// The scenarios whose recovering relay is crashed in turn at each of its writes: two whose
/// recovery compensates, one reversing a redemption whose answer never came, the other a
/// declined capture with cancellations retried (a third, a plain declined capture, took CI
/// another minute and covered no other write).
const CRASHED_AGAIN: [Scenario; 2] = [
    Scenario::CaptureUnreachable,
    Scenario::CancellationAnswersLost,
];

impl Scenario {
    fn payment_method(self) -> &'static str {
        match self {
            Self::DeclinedAtCapture
            | Self::CancellationWindowClosed
            | Self::CancellationAnswersLost
            | Self::CancellationsUnreachableForAWhile => "pm_alice_declines",
            _ => "pm_alice_visa",
        }
    }
}

/// A case's faults, handed out one per relay in the order the relays start; the relays after
/// the last run without one.
struct Faults<'a> {
    left: std::slice::Iter<'a, Fault>,
    last: Option<Arc<Plan>>,
}

impl<'a> Faults<'a> {
    fn new(faults: &'a [Fault]) -> Self {
        Self {
            left: faults.iter(),
            last: None,
        }
    }

    /// The next relay's plan, if a fault is left.
    fn next_plan(&mut self) -> Option<Arc<Plan>> {
        let plan = Arc::new(Plan::new(*self.left.next()?));
        if self.left.len() == 0 {
            self.last = Some(plan.clone());
        }
        Some(plan)
    }

    /// Whether the last fault was reached.
    fn last_reached(&self) -> bool {
        self.last.as_ref().is_some_and(|plan| plan.triggered())
    }
}

/// What `request` answered, `(0, null)` when the connection died with the relay.
async fn tried(request: reqwest::RequestBuilder) -> (u16, Value) {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// A new order of c_alice, 49.99 EUR.
fn new_order() -> Value {
    json!({"customer_id": "c_alice", "total": {"amount": 4999, "currency": "EUR"}})
}

/// A checkout retried under its key once its order ended agrees with that end: the order
/// completed is 200 with the order, a failed one its failure; marked replayed.
fn check_retried(why: &str, view: &Value, (status, body, replayed): &(u16, Value, bool)) {
    let context = format!("{why}: order {view}, retried {status} {body}");
    assert!(*replayed, "{context}: the first checkout's answer");
    match view["status"].as_str() {
        Some("completed") => {
            assert_eq!(*status, 200, "{context}");
            assert_eq!(body["status"], "completed", "{context}");
        }
        Some("failed") => {
            assert!(
                ["redemption-refused", "issuer-unavailable"].contains(&problem_type(body)),
                "{context}"
            );
            assert_eq!(body["order"]["status"], "failed", "{context}");
        }
        other => panic!("{context}: retried an order {other:?}"),
    }
}

/// The stand-ins a scenario puts between the relays and the domains.
#[derive(Default)]
struct StandIns {
    answer_losers: Vec<AnswerLoser>,
    unreachable: Option<Unreachable>,
}

impl StandIns {
    /// Arms them for a new case.
    fn arm(&self) {
        for loser in &self.answer_losers {
            loser.lose_next(1);
        }
        if let Some(unreachable) = &self.unreachable {
            unreachable.refuse_next(3);
        }
    }
}

/// What the customer's ledgers say: points available, held and spent; the coupon's uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ledgers {
    available: i64,
    held: i64,
    spent: i64,
    coupon_uses: i64,
}

struct Harness {
    scenario: Scenario,
    /// The store of the relays under test, for the test's own reads.
    store: tokio::sync::OnceCell<ctr_store::Store>,
    world: World,
    server: ServerConfig,
    settings: RelaySettings,
    stand_ins: StandIns,
}

/// A port on 127.0.0.1 that refuses connections.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

async fn hold_state<L: Ledger>(domain: &Domain<L>, jti: Uuid) -> Option<HoldState> {
    domain.state.engine.get(jti).await.unwrap().map(|r| r.state)
}

impl Harness {
    async fn new(scenario: Scenario) -> Self {
        let mut domains = domain_settings();
        if let Scenario::CancellationWindowClosed = scenario {
            domains.cancel_window = Duration::ZERO;
        }
        let world = World::start_custom(domains, |_| {}).await;
        let server = world.relay_under_test().await;
        let mut settings = world.relay_settings.clone();
        settings.checkout_deadline = Duration::from_millis(500);
        settings.recovery_interval = Duration::from_millis(50);
        settings.call_retries = 0;
        // Orders left open by a crash before their admission would count against the
        // customer's cap over many cases.
        settings.max_open_orders_per_customer = 10_000;
        let mut stand_ins = StandIns::default();
        match scenario {
            Scenario::CaptureUnreachable => {
                let port = closed_port().await;
                settings.issuers.get_mut("payments").unwrap().redeem_url =
                    format!("https://127.0.0.1:{port}/service/v1/payments/redemptions");
            }
            Scenario::CaptureAnswerLost => {
                let loser = AnswerLoser::start(&world.pki, world.payments.running.url("")).await;
                settings.issuers.get_mut("payments").unwrap().redeem_url =
                    loser.url("/service/v1/payments/redemptions");
                stand_ins.answer_losers.push(loser);
            }
            Scenario::CancellationAnswersLost => {
                for (name, running) in [
                    ("coupons", &world.coupons.running),
                    ("points", &world.points.running),
                    ("payments", &world.payments.running),
                ] {
                    let loser = AnswerLoser::start(&world.pki, running.url("")).await;
                    settings.issuers.get_mut(name).unwrap().cancel_url =
                        loser.url(&format!("/service/v1/{name}/cancellations"));
                    stand_ins.answer_losers.push(loser);
                }
            }
            Scenario::CancellationsUnreachableForAWhile => {
                let unreachable = Unreachable::start(world.points.running.public).await;
                settings.issuers.get_mut("points").unwrap().cancel_url =
                    unreachable.url("/service/v1/points/cancellations");
                stand_ins.unreachable = Some(unreachable);
            }
            Scenario::BoundPassed => settings.checkout_bound = settings.checkout_deadline,
            _ => {}
        }
        Self {
            scenario,
            store: tokio::sync::OnceCell::new(),
            world,
            server,
            settings,
            stand_ins,
        }
    }

    async fn ledgers(&self) -> Ledgers {
        let balance = self.world.balance("c_alice").await;
        let coupon = self.world.coupon("SPRING10").await;
        let n = |v: &Value| v.as_i64().unwrap();
        Ledgers {
            available: n(&balance["available"]),
            held: n(&balance["held"]),
            spent: n(&balance["spent"]),
            coupon_uses: n(&coupon["uses"]),
        }
    }

    async fn relay(&self, plan: Option<Arc<Plan>>) -> CrashableRelay {
        let relay = CrashableRelay::start_with_faults(
            self.server.clone(),
            self.settings.clone(),
            self.world.clock.clone(),
            plan.map(|p| p as Arc<dyn order_processing::faults::SagaFaults>),
        )
        .await;
        self.world.wait_until_admin_ready(relay.admin).await;
        relay
    }

    /// Confirms coupon, points and payment for `order` (49.99 EUR) and answers the tokens
    /// and their jtis, in redemption order.
    async fn confirm(&self, order: &str) -> (Vec<String>, Vec<Uuid>) {
        let world = &self.world;
        let answers = [
            world
                .confirm_coupon(order, "c_alice", "SPRING10", 4999)
                .await,
            world.confirm_points(order, "c_alice", 500).await,
            world
                .confirm_payment(order, "c_alice", self.scenario.payment_method(), 3999)
                .await,
        ];
        let mut tokens = Vec::new();
        let mut jtis = Vec::new();
        for (status, body) in answers {
            assert_eq!(status, 201, "{body}");
            tokens.push(body["token"].as_str().unwrap().to_owned());
            jtis.push(Uuid::parse_str(body["jti"].as_str().unwrap()).unwrap());
        }
        if let Scenario::HoldForgotten = self.scenario {
            world
                .payments
                .state
                .engine
                .store()
                .execute(
                    ctr_store::query("DELETE FROM holds WHERE jti = $1").bind(jtis[2].to_string()),
                )
                .await
                .unwrap();
        }
        (tokens, jtis)
    }

    /// Opens the customer's order at `relay` under the idempotency key `key`, as a client
    /// that retries does: again under the same key when the store failed. `None` when the
    /// relay crashed at `plan`'s fault (it wrote and never answered).
    async fn open_keyed(
        &self,
        relay: &CrashableRelay,
        plan: Option<&Plan>,
        key: &str,
    ) -> Option<String> {
        let url = relay.url("/service/v1/orders");
        for _ in 0..2 {
            let request = self.world.post_keyed(url.clone(), new_order(), key);
            let mut request = std::pin::pin!(request);
            let answer = loop {
                tokio::select! {
                    answer = &mut request => break answer,
                    () = tokio::time::sleep(Duration::from_millis(20)) => {
                        if plan.is_some_and(|p| p.triggered() && matches!(p.fault(), Fault::CrashAfter(_))) {
                            return None;
                        }
                    }
                }
            };
            if answer.status == 201 {
                return Some(
                    answer.body["order_processing_id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
        }
        panic!(
            "{:?}: the order was not opened under its key",
            self.scenario
        )
    }

    /// Runs one case: `faults[0]` in the relay that opens the order and admits the checkout,
    /// and each further fault in the relay started in place of the one before when that one
    /// crashed. A relay that crashed right after storing the order never answered it: the
    /// customer opens it again under its idempotency key at the next relay. Answers whether
    /// the last fault was reached (a checkout reaches only so many operations).
    async fn case(&self, faults: &[Fault]) -> bool {
        let why = format!("{:?}, {faults:?}", self.scenario);
        let before = self.ledgers().await;
        self.stand_ins.arm();
        let mut faults = Faults::new(faults);
        let mut plan = faults.next_plan();
        let mut relay = self.relay(plan.clone()).await;
        let orders_before = self.orders_of_alice().await;
        let order_key = format!("order-{}", Uuid::new_v4());
        let order = loop {
            if let Some(order) = self.open_keyed(&relay, plan.as_deref(), &order_key).await {
                break order;
            }
            relay.kill();
            expire_claims(&self.server.store_url).await;
            plan = faults.next_plan();
            relay = self.relay(plan.clone()).await;
        };
        assert_eq!(
            self.orders_of_alice().await,
            orders_before + 1,
            "{why}: one order under its key, whoever answered"
        );
        let (tokens, jtis) = self.confirm(&order).await;
        let checkout = relay.url(&format!("/service/v1/orders/{order}/checkout"));
        let checkout_key = format!("checkout-{}", Uuid::new_v4());
        let answer = tokio::time::timeout(
            Duration::from_secs(20),
            self.world
                .post_keyed(checkout, json!({"tokens": tokens}), &checkout_key),
        )
        .await
        .unwrap_or_else(|_| panic!("{why}: the checkout never answered"));
        let answer = (answer.status, answer.body);
        let path = format!("/service/v1/orders/{order}");
        let mut crashed = false;
        if let Some(plan) = &plan {
            let reached = self.reached(&why, &relay, &path, plan).await;
            if reached && !matches!(plan.fault(), Fault::CrashAfter(_)) && answer.0 == 200 {
                let (_, stored) = self.world.get(relay.url(&path)).await;
                assert_eq!(
                    stored["status"], "completed",
                    "{why}: 200 only once completed is durable: {stored}"
                );
            }
            crashed = reached && matches!(plan.fault(), Fault::CrashAfter(_));
        }
        while crashed {
            relay.kill();
            // SIGKILL stops every thread of a process; this in-process kill stops the relay's
            // runtime but its store thread still lands what it was handed (a lease its
            // recovery worker was taking, say), which could outlive one expiry and keep the
            // recovering relay out for a whole lease. Expire until that is past.
            for _ in 0..5 {
                expire_claims(&self.server.store_url).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            plan = faults.next_plan();
            relay = self.relay(plan.clone()).await;
            crashed = match &plan {
                Some(plan) => self.reached(&why, &relay, &path, plan).await,
                None => false,
            };
        }
        if !crashed {
            expire_claims(&self.server.store_url).await;
        }
        let view = self.world.ended(relay.url(&path)).await;
        // The customer, who may have heard nothing, retries the checkout under its key, at a
        // relay with no fault left to reach.
        if plan.is_some_and(|plan| !plan.triggered()) {
            relay.kill();
            relay = self.relay(None).await;
        }
        let retried = self
            .retry_checkout(&relay, &order, &tokens, &checkout_key, &view)
            .await;
        relay.kill();
        self.check(&why, &order, &view, &answer, &jtis, before)
            .await;
        if let Some(retried) = retried {
            check_retried(&why, &view, &retried);
        }
        faults.last_reached()
    }

    /// The checkout of `order` again under `key` at `relay`, once it ended; `None` for an
    /// order still open (its admission never happened, so a retry would check it out now).
    async fn retry_checkout(
        &self,
        relay: &CrashableRelay,
        order: &str,
        tokens: &[String],
        key: &str,
        view: &Value,
    ) -> Option<(u16, Value, bool)> {
        if view["status"] == "open" {
            return None;
        }
        let retried = self
            .world
            .post_keyed(
                relay.url(&format!("/service/v1/orders/{order}/checkout")),
                json!({"tokens": tokens}),
                key,
            )
            .await;
        Some((retried.status, retried.body, retried.replayed))
    }

    /// The store of the relays under test, opened once.
    async fn store(&self) -> &ctr_store::Store {
        self.store
            .get_or_init(|| async {
                let migrations = ctr_service_kit::with_kit_migrations(order_processing::MIGRATIONS);
                ctr_store::Store::open(&self.server.store_url, &migrations)
                    .await
                    .unwrap()
            })
            .await
    }

    /// The types of `order`'s events in that store, in the order they happened.
    async fn events_of(&self, order: &str) -> Vec<String> {
        self.store()
            .await
            .fetch_all(
                ctr_store::query_as::<(String,)>(
                    "SELECT type FROM order_events WHERE order_id = $1 ORDER BY seq",
                )
                .bind(order.to_owned()),
            )
            .await
            .unwrap()
            .into_iter()
            .map(|(kind,)| kind)
            .collect()
    }

    /// How many orders c_alice has in the store of the relays under test.
    async fn orders_of_alice(&self) -> i64 {
        let store = self.store().await;
        let (n,): (i64,) = store
            .fetch_one(ctr_store::query_as(
                "SELECT COUNT(*) FROM orders WHERE customer_id = 'c_alice'",
            ))
            .await
            .unwrap();
        n
    }

    /// Waits until `plan`'s fault was reached in `relay`'s checkout of the order at `path`,
    /// or the checkout ended with no store operation under way; answers whether it was.
    async fn reached(&self, why: &str, relay: &CrashableRelay, path: &str, plan: &Plan) -> bool {
        let waited = tokio::time::Instant::now();
        while !plan.triggered() {
            let (_, view) = self.world.get(relay.url(path)).await;
            if view["status"] != "checking_out"
                && view["compensation_pending"] == false
                && plan.quiet()
            {
                break;
            }
            assert!(
                waited.elapsed() < Duration::from_secs(20),
                "{why}: never ended: {view}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        plan.triggered()
    }

    async fn check(
        &self,
        why: &str,
        order: &str,
        view: &Value,
        answer: &(u16, Value),
        jtis: &[Uuid],
        before: Ledgers,
    ) {
        let world = &self.world;
        let states = [
            hold_state(&world.coupons, jtis[0]).await,
            hold_state(&world.points, jtis[1]).await,
            hold_state(&world.payments, jtis[2]).await,
        ];
        let status = view["status"].as_str().unwrap();
        let outcomes = outcomes(view);
        let context = format!("{why}: holds {states:?}, order {view}, answer {answer:?}");
        match status {
            "completed" => {
                assert_eq!(outcomes, ["redeemed"; 3], "{context}");
                assert_eq!(states, [Some(HoldState::Redeemed); 3], "{context}");
                assert_eq!(view["needs_attention"], false, "{context}");
            }
            "failed" => {
                let mut unreversed = false;
                for (outcome, state) in outcomes.iter().zip(states) {
                    match *outcome {
                        "unreversed" => {
                            unreversed = true;
                            assert_eq!(state, Some(HoldState::Redeemed), "{context}");
                        }
                        "compensated" | "released" | "failed" => assert!(
                            matches!(
                                state,
                                None | Some(
                                    HoldState::Released | HoldState::Reversed | HoldState::Expired
                                )
                            ),
                            "a hold of a failed order is left {state:?}: {context}"
                        ),
                        other => panic!("a failed order's step is {other}: {context}"),
                    }
                }
                assert_eq!(view["needs_attention"], unreversed, "{context}");
                assert!(
                    [200, 201].iter().all(|s| answer.0 != *s),
                    "an answer contradicts the order's end: {context}"
                );
            }
            "open" => {
                // The admission never finished: nothing was consumed, the holds are still
                // placed; the customer abandons them.
                assert!(outcomes.is_empty(), "{context}");
                assert!(
                    states
                        .iter()
                        .all(|s| matches!(s, None | Some(HoldState::Held))),
                    "{context}"
                );
                let relay = world.as_relay();
                for (jti, domain) in jtis.iter().zip(["coupons", "points", "payments"]) {
                    let url = match domain {
                        "coupons" => world
                            .coupons
                            .running
                            .url("/service/v1/coupons/cancellations"),
                        "points" => world.points.running.url("/service/v1/points/cancellations"),
                        _ => world
                            .payments
                            .running
                            .url("/service/v1/payments/cancellations"),
                    };
                    world
                        .post_as(
                            &relay,
                            url,
                            json!({"jti": jti, "order_processing_id": order}),
                        )
                        .await;
                }
            }
            other => panic!("the order ended {other}: {context}"),
        }
        if answer.0 == 200 {
            assert_eq!(status, "completed", "{context}");
        }
        if ["redemption-refused", "issuer-unavailable"].contains(&problem_type(&answer.1)) {
            assert_eq!(status, "failed", "{context}");
        }
        // The outbox holds an event exactly for each transition that committed, once.
        let expected: &[&str] = match (status, view["needs_attention"] == true) {
            ("completed", _) => &["order.completed"],
            ("failed", false) => &["order.failed"],
            ("failed", true) => &["order.failed", "order.needs_attention"],
            _ => &[],
        };
        assert_eq!(self.events_of(order).await, expected, "events: {context}");
        // Exactly what the holds say moved, once.
        let after = self.ledgers().await;
        let points_spent = if states[1] == Some(HoldState::Redeemed) {
            500
        } else {
            0
        };
        let coupon_used = i64::from(states[0] == Some(HoldState::Redeemed));
        assert_eq!(
            after,
            Ledgers {
                available: before.available - points_spent,
                held: before.held,
                spent: before.spent + points_spent,
                coupon_uses: before.coupon_uses + coupon_used,
            },
            "{context}"
        );
    }

    /// As [`Self::case`] with the relay under test a process of its own, aborted right after
    /// its `abort_after`-th durable store operation: every thread dies with it, the store's
    /// owner thread included. Answers whether it aborted.
    async fn process_case(&self, abort_after: usize) -> bool {
        let why = format!("{:?}, process aborted after {abort_after}", self.scenario);
        let before = self.ledgers().await;
        self.stand_ins.arm();
        let mut relay = ChildRelay::start(
            env!("CARGO_BIN_EXE_ctr-crashing-relay"),
            &self.server,
            &self.settings,
            Some(abort_after),
            None,
        )
        .await;
        self.world.wait_until_admin_ready(relay.admin).await;
        let orders_before = self.orders_of_alice().await;
        let order_key = format!("order-{}", Uuid::new_v4());
        let mut opened = self
            .try_post_keyed(relay.url("/service/v1/orders"), new_order(), &order_key)
            .await;
        let mut aborted_at_open = false;
        if opened.0 == 0 {
            // Aborted right after storing the order, before answering: the customer opens
            // it again under its key at the relay started in its place.
            relay.kill().await;
            aborted_at_open = true;
            relay = ChildRelay::start(
                env!("CARGO_BIN_EXE_ctr-crashing-relay"),
                &self.server,
                &self.settings,
                None,
                None,
            )
            .await;
            self.world.wait_until_admin_ready(relay.admin).await;
            opened = self
                .try_post_keyed(relay.url("/service/v1/orders"), new_order(), &order_key)
                .await;
        }
        assert_eq!(opened.0, 201, "{why}: {opened:?}");
        assert_eq!(
            self.orders_of_alice().await,
            orders_before + 1,
            "{why}: one order under its key"
        );
        let order = opened.1["order_processing_id"].as_str().unwrap().to_owned();
        let (tokens, jtis) = self.confirm(&order).await;
        let path = format!("/service/v1/orders/{order}");
        let answer = self
            .try_post(
                relay.url(&format!("{path}/checkout")),
                json!({"tokens": tokens}),
            )
            .await;
        let waited = tokio::time::Instant::now();
        let aborted = loop {
            if relay.aborted() {
                break true;
            }
            let (_, view) = self.try_get(relay.url(&path)).await;
            if view["status"] != "checking_out" && view["compensation_pending"] == false {
                tokio::time::sleep(Duration::from_millis(50)).await;
                break relay.aborted();
            }
            assert!(
                waited.elapsed() < Duration::from_secs(20),
                "{why}: neither aborted nor ended: {view}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        relay.kill().await;
        expire_claims(&self.server.store_url).await;
        let recovering = self.relay(None).await;
        let view = self.world.ended(recovering.url(&path)).await;
        recovering.kill();
        self.check(&why, &order, &view, &answer, &jtis, before)
            .await;
        aborted || aborted_at_open
    }

    /// A POST as the customer under `Idempotency-Key: "<key>"`, `(0, null)` when the
    /// connection dies with the relay.
    async fn try_post_keyed(&self, url: String, body: Value, key: &str) -> (u16, Value) {
        let request = self.world.customer.post(url);
        tried(
            request
                .header("idempotency-key", idempotency_key(key))
                .json(&body),
        )
        .await
    }

    /// A POST as the customer, `(0, null)` when the connection dies with the relay.
    async fn try_post(&self, url: String, body: Value) -> (u16, Value) {
        tried(self.world.customer.post(url).json(&body)).await
    }

    async fn try_get(&self, url: String) -> (u16, Value) {
        tried(self.world.customer.get(url)).await
    }

    /// Runs the scenario with `fault(n)` for n = 1, 2, ... until a checkout does not reach
    /// operation n; answers how many cases reached their fault.
    async fn enumerate(self, fault: fn(usize) -> Fault) -> usize {
        let mut n = 1;
        while self.case(&[fault(n)]).await {
            n += 1;
            assert!(
                n < 40,
                "{:?}: a checkout of more than 40 operations",
                self.scenario
            );
        }
        n - 1
    }

    /// Crashes the relay after each of its writes n, and the relay recovering it after each
    /// of its own writes m; answers how many (n, m) cases reached both.
    async fn enumerate_crashed_twice(self) -> usize {
        let mut covered = 0;
        let mut n = 1;
        loop {
            let mut m = 1;
            while self
                .case(&[Fault::CrashAfter(n), Fault::CrashAfter(m)])
                .await
            {
                covered += 1;
                m += 1;
                assert!(
                    m < 40,
                    "{:?}: a recovery of more than 40 operations",
                    self.scenario
                );
            }
            if m == 1 && !self.case(&[Fault::CrashAfter(n)]).await {
                return covered; // the checkout no longer reaches write n
            }
            n += 1;
        }
    }
}

/// The scenarios whose relay is run as a process and aborted at each of its writes.
const AS_A_PROCESS: [Scenario; 3] = [
    Scenario::Success,
    Scenario::DeclinedAtCapture,
    Scenario::CaptureUnreachable,
];

async fn every_scenario(fault: fn(usize) -> Fault) -> Vec<(Scenario, usize)> {
    // Boxed: the futures of nine harnesses are too large for a test thread's stack.
    let runs = SCENARIOS.map(|scenario| {
        Box::pin(async move {
            let covered = Harness::new(scenario).await.enumerate(fault).await;
            (scenario, covered)
        })
    });
    futures::future::join_all(runs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_crashed_after_any_write_of_a_checkout_recovers_it_to_a_consistent_end() {
    let covered = every_scenario(Fault::CrashAfter).await;
    let total: usize = covered.iter().map(|(_, n)| n).sum();
    println!("crash points covered: {total} {covered:?}");
    for (scenario, n) in &covered {
        assert!(*n >= 6, "{scenario:?}: only {n} crash points");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovering_relay_crashed_after_any_of_its_own_writes_is_recovered_in_turn_to_a_consistent_end()
 {
    let runs = CRASHED_AGAIN.map(|scenario| {
        Box::pin(async move {
            let covered = Harness::new(scenario).await.enumerate_crashed_twice().await;
            (scenario, covered)
        })
    });
    let covered = futures::future::join_all(runs).await;
    let total: usize = covered.iter().map(|(_, n)| n).sum();
    println!("crash points of recovering relays covered: {total} {covered:?}");
    for (scenario, n) in &covered {
        assert!(
            *n >= 6,
            "{scenario:?}: only {n} crash points while recovering"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_at_any_operation_of_a_checkout_never_answers_200_early_and_ends_consistent()
 {
    let covered = every_scenario(Fault::FailAt).await;
    let total: usize = covered.iter().map(|(_, n)| n).sum();
    println!("store faults covered: {total} {covered:?}");
    for (scenario, n) in &covered {
        assert!(*n >= 6, "{scenario:?}: only {n} store operations");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_process_aborted_after_any_write_of_a_checkout_is_recovered_to_a_consistent_end() {
    let runs = AS_A_PROCESS.map(|scenario| {
        Box::pin(async move {
            let harness = Harness::new(scenario).await;
            let mut n = 1;
            while harness.process_case(n).await {
                n += 1;
                assert!(
                    n < 40,
                    "{scenario:?}: a checkout of more than 40 operations"
                );
            }
            (scenario, n - 1)
        })
    });
    let covered = futures::future::join_all(runs).await;
    let total: usize = covered.iter().map(|(_, n)| n).sum();
    println!("process crash points covered: {total} {covered:?}");
    for (scenario, n) in &covered {
        assert!(*n >= 6, "{scenario:?}: only {n} process crash points");
    }
}

/// How many checkouts run at once while the relay process is aborted inside a group commit.
const AT_ONCE: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_process_aborted_inside_any_group_commit_leaves_every_checkout_consistent() {
    if ctr_system_tests::postgres().is_some() {
        // Group commit is SQLite's owner thread; the SQLite run of the suite covers it.
        println!("no group commit on PostgreSQL: covered by the SQLite run");
        return;
    }
    let harness = Harness::new(Scenario::Success).await;
    let world = &harness.world;
    // Case k aborts inside the (k+1)-th group commit of more than one transaction; the first
    // case that does not abort counts the ones before it.
    for skipped in 0..40 {
        let failpoint = if skipped == 0 {
            "ctr-store::between-jobs=return".to_owned()
        } else {
            format!("ctr-store::between-jobs={skipped}*off->return")
        };
        let why = format!("inside group commit {}", skipped + 1);
        let mut relay = ChildRelay::start(
            env!("CARGO_BIN_EXE_ctr-crashing-relay"),
            &harness.server,
            &harness.settings,
            None,
            Some(&failpoint),
        )
        .await;
        // Card-only checkouts, all at once: their writes meet in the store's groups. (A relay
        // aborted while it started, in a group of its own start's transactions, has none.)
        let started = relay.ready(&world.customer).await;
        let runs = (0..if started { AT_ONCE } else { 0 }).map(|_| {
            let (harness, orders) = (&harness, relay.url("/service/v1/orders"));
            async move {
                let (status, body) = harness
                    .try_post(
                        orders.clone(),
                        json!({"customer_id": "c_alice",
                    "total": {"amount": 4999, "currency": "EUR"}}),
                    )
                    .await;
                if status != 201 {
                    return None; // the relay died first: the customer never had an order
                }
                let order = body["order_processing_id"].as_str().unwrap().to_owned();
                let (status, payment) = world
                    .confirm_payment(&order, "c_alice", "pm_alice_visa", 4999)
                    .await;
                assert_eq!(status, 201, "{payment}");
                let jti = Uuid::parse_str(payment["jti"].as_str().unwrap()).unwrap();
                let checkout = format!("{orders}/{order}/checkout");
                let answer = harness
                    .try_post(checkout, json!({"tokens": [payment["token"]]}))
                    .await;
                Some((order, jti, answer))
            }
        });
        let checkouts: Vec<_> = futures::future::join_all(runs).await;
        let waited = tokio::time::Instant::now();
        while !relay.aborted() && waited.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let aborted = relay.aborted();
        relay.kill().await;
        expire_claims(&harness.server.store_url).await;
        let recovering = harness.relay(None).await;
        for (order, jti, answer) in checkouts.into_iter().flatten() {
            let view = world
                .ended(recovering.url(&format!("/service/v1/orders/{order}")))
                .await;
            let hold = hold_state(&world.payments, jti).await;
            let context = format!("{why}: hold {hold:?}, answer {answer:?}, order {view}");
            match view["status"].as_str().unwrap() {
                "completed" => assert_eq!(hold, Some(HoldState::Redeemed), "{context}"),
                "failed" => assert_ne!(hold, Some(HoldState::Redeemed), "{context}"),
                "open" => {
                    // Its admission never committed: nothing consumed, the hold still placed.
                    assert!(outcomes(&view).is_empty(), "{context}");
                    assert_eq!(hold, Some(HoldState::Held), "{context}");
                }
                other => panic!("the order ended {other}: {context}"),
            }
            if answer.0 == 200 {
                assert_eq!(view["status"], "completed", "{context}");
            }
        }
        recovering.kill();
        if !aborted {
            println!("process aborts inside a group commit covered: {skipped}");
            assert!(skipped >= 3, "only {skipped} aborts inside a group commit");
            return;
        }
    }
}
