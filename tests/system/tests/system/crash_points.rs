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

use std::sync::Arc;
use std::time::Duration;

use ctr_domain_kit::{HoldState, Ledger};
use ctr_service_kit::ServerConfig;
use ctr_system_tests::faults::{Fault, Plan};
use ctr_system_tests::{
    CrashableRelay, Domain, World, domain_settings, expire_claims, outcomes, problem_type,
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
}

const SCENARIOS: [Scenario; 5] = [
    Scenario::Success,
    Scenario::DeclinedAtCapture,
    Scenario::CaptureUnreachable,
    Scenario::HoldForgotten,
    Scenario::CancellationWindowClosed,
];

impl Scenario {
    fn payment_method(self) -> &'static str {
        match self {
            Self::DeclinedAtCapture | Self::CancellationWindowClosed => "pm_alice_declines",
            _ => "pm_alice_visa",
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
    world: World,
    server: ServerConfig,
    settings: RelaySettings,
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
        if let Scenario::CaptureUnreachable = scenario {
            let port = closed_port().await;
            settings.issuers.get_mut("payments").unwrap().redeem_url =
                format!("https://127.0.0.1:{port}/service/v1/payments/redemptions");
        }
        Self {
            scenario,
            world,
            server,
            settings,
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

    /// Runs one case; answers whether the fault was reached (a checkout reaches only so many
    /// operations).
    async fn case(&self, fault: Fault) -> bool {
        let why = format!("{:?}, {fault:?}", self.scenario);
        let before = self.ledgers().await;
        let plan = Arc::new(Plan::new(fault));
        let relay = self.relay(Some(plan.clone())).await;
        let order = self
            .world
            .open_order_at(&relay.url("/service/v1/orders"), "c_alice", 4999)
            .await;
        let (tokens, jtis) = self.confirm(&order).await;
        let checkout = relay.url(&format!("/service/v1/orders/{order}/checkout"));
        let answer = tokio::time::timeout(
            Duration::from_secs(20),
            self.world.post(checkout, json!({"tokens": tokens})),
        )
        .await
        .unwrap_or_else(|_| panic!("{why}: the checkout never answered"));
        let path = format!("/service/v1/orders/{order}");
        // The answer may come at the deadline while the saga goes on: wait until the fault
        // was reached, or the checkout ended with no store operation under way.
        let waited = tokio::time::Instant::now();
        while !plan.triggered() {
            let (_, view) = self.world.get(relay.url(&path)).await;
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
        let reached = plan.triggered();
        let view = match fault {
            Fault::CrashAfter(_) if reached => {
                relay.kill();
                // SIGKILL stops every thread of a process; this in-process kill stops the
                // relay's runtime but its store thread still lands what it was handed (a lease
                // its recovery worker was taking, say), which could outlive one expiry and
                // keep the recovering relay out for a whole lease. Expire until that is past.
                for _ in 0..5 {
                    expire_claims(&self.server.store_url).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let recovering = self.relay(None).await;
                let view = self.world.ended(recovering.url(&path)).await;
                recovering.kill();
                view
            }
            _ => {
                if answer.0 == 200 {
                    let (_, stored) = self.world.get(relay.url(&path)).await;
                    assert_eq!(
                        stored["status"], "completed",
                        "{why}: 200 only once completed is durable: {stored}"
                    );
                }
                expire_claims(&self.server.store_url).await;
                let view = self.world.ended(relay.url(&path)).await;
                relay.kill();
                view
            }
        };
        self.check(&why, &order, &view, &answer, &jtis, before)
            .await;
        reached
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

    /// Runs the scenario with `fault(n)` for n = 1, 2, ... until a checkout does not reach
    /// operation n; answers how many cases reached their fault.
    async fn enumerate(self, fault: fn(usize) -> Fault) -> usize {
        let mut n = 1;
        while self.case(fault(n)).await {
            n += 1;
            assert!(
                n < 40,
                "{:?}: a checkout of more than 40 operations",
                self.scenario
            );
        }
        n - 1
    }
}

async fn every_scenario(fault: fn(usize) -> Fault) -> Vec<(Scenario, usize)> {
    let runs = SCENARIOS.map(|scenario| async move {
        let covered = Harness::new(scenario).await.enumerate(fault).await;
        (scenario, covered)
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
async fn a_store_failing_at_any_operation_of_a_checkout_never_answers_200_early_and_ends_consistent()
 {
    let covered = every_scenario(Fault::FailAt).await;
    let total: usize = covered.iter().map(|(_, n)| n).sum();
    println!("store faults covered: {total} {covered:?}");
    for (scenario, n) in &covered {
        assert!(*n >= 6, "{scenario:?}: only {n} store operations");
    }
}
