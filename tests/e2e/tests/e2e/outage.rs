//! A long outage against the images: eight clients run mixed checkouts while payments is
//! stopped for 90 s and the relay is SIGKILLed in the middle of it, with the default recovery
//! settings. Orders confirmed before the outage are checked out during it, the last of them as
//! the relay is killed: they fail at capture with their compensation pending (the payment's
//! void cannot reach payments), those cut off by the kill are recovered while payments is still
//! down, and once payments is back every order ends within the compensation backoff's cap: none
//! stays `checking_out`, the points are conserved, and each completed order captured its
//! payment while no other did.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ctr_e2e_tests::Stack;

use crate::chaos::{
    CLIENTS, Ended, Flow, Kind, POINTS, check_out, client, ended_consistently, points_total,
    prepare,
};

/// How long the clients run.
const RUN: Duration = Duration::from_secs(130);
/// When payments stops, and for how long.
const OUTAGE_AT: Duration = Duration::from_secs(10);
const OUTAGE: Duration = Duration::from_secs(90);
/// When the relay is killed (during the outage).
const KILL_AT: Duration = Duration::from_secs(40);
/// Orders confirmed before the outage and checked out during it, one every `STASH_EVERY`, the
/// last as the relay is killed.
const STASH: usize = 16;
const STASH_EVERY: Duration = Duration::from_millis(200);
/// The relay's defaults: `CTR_CHECKOUT_BOUND` and `CTR_COMPENSATION_RETRY_MAX`.
const BOUND: Duration = Duration::from_secs(120);
const RETRY_MAX: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_long_payments_outage_with_a_relay_killed_during_it_ends_every_order_soon_after() {
    let _one_stack = crate::ONE_STACK.lock().await;
    let stack = Stack::start_unlimited(&[]).await;
    let (total_before, spent_before) = points_total(&stack).await;
    let mut stash = Vec::new();
    while stash.len() < STASH {
        stash.extend(prepare(&stack, Kind::Valid).await);
    }
    let flows = Mutex::new(Vec::new());
    let started = Instant::now();
    let until = started + RUN;
    let payments = stack.domain("payments");
    let outage = async {
        tokio::time::sleep(OUTAGE_AT).await;
        Stack::docker("stop", payments);
        tokio::time::sleep(OUTAGE).await;
        payments.start().await.unwrap();
        Instant::now()
    };
    let stashed = async {
        let first = KILL_AT - STASH_EVERY * u32::try_from(STASH - 1).unwrap();
        tokio::time::sleep(first).await;
        let checkouts = stash.into_iter().enumerate().map(|(i, prepared)| {
            let stack = &stack;
            async move {
                tokio::time::sleep(STASH_EVERY * u32::try_from(i).unwrap()).await;
                check_out(stack, prepared).await
            }
        });
        futures::future::join_all(checkouts).await
    };
    let kill = async {
        tokio::time::sleep(KILL_AT).await;
        Stack::docker("kill", &stack.relay);
        // Back at once; ready only once it has every issuer's keys, after the outage.
        stack.relay.start().await.unwrap();
    };
    let clients = futures::future::join_all((0..CLIENTS).map(|i| client(&stack, i, until, &flows)));
    let (_, returned, (), stashed) = tokio::join!(clients, outage, kill, stashed);
    Stack::wait_healthy(&stack.relay).await;
    let mut flows: Vec<Flow> = flows.into_inner().unwrap();
    flows.extend(stashed);

    // Every order ends soon after payments is back: its compensation's next try is due within
    // the backoff's cap (plus a claim's lease and a recovery pass); the limit the issue sets,
    // the checkout's bound plus the outage plus the cap, is far above it.
    let limit = BOUND + OUTAGE + RETRY_MAX;
    let Ended {
        completed,
        counts,
        latest,
    } = ended_consistently(&stack, &flows, returned, limit).await;
    let (total_after, spent_after) = points_total(&stack).await;
    let cut_off = flows.iter().filter(|f| f.answer.is_none()).count();
    println!(
        "outage: {} checkouts in {RUN:?} with payments stopped for {OUTAGE:?} and the relay killed \
         during it ({STASH} of them confirmed before the outage and checked out during it, \
         {cut_off} cut off by the kill); {completed} completed; every order ended within \
         {latest:?} of payments' return; by kind and end: {counts:?}",
        flows.len()
    );
    assert!(completed > 0, "{counts:?}");
    assert_eq!(total_after, total_before, "points conserved");
    assert_eq!(
        spent_after - spent_before,
        POINTS * completed,
        "points spent exactly by the completed orders"
    );
}
