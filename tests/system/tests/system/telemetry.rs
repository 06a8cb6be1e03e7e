//! Business metrics beside the HTTP ones, and the scrape listener (`CTR_METRICS_ADDR`) that
//! serves them to Prometheus without opening the admin listener.

use std::time::Duration;

use ctr_system_tests::{Running, World, domain_settings};

async fn scrape(world: &World, service: &Running) -> String {
    let addr = service.metrics.expect("CTR_METRICS_ADDR is set");
    let response = world
        .customer
        .get(format!("https://127.0.0.1:{}/metrics", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as exposed), or 0.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn checkouts_problems_compensations_redemptions_and_holds_are_counted_and_scraped() {
    let world = World::start_tuned(
        domain_settings(),
        |_| {},
        |server| server.metrics_addr = Some("127.0.0.1:0".parse().unwrap()),
    )
    .await;
    // A checkout, its replay, and a declined capture with compensation.
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    assert_eq!(world.checkout(&order, &tokens).await.0, 200);
    assert_eq!(world.checkout(&order, &tokens).await.0, 409);
    let declined = world.open_order("c_alice", 4999).await;
    let tokens = world
        .three_tokens(&declined, "c_alice", "pm_alice_declines")
        .await;
    assert_eq!(world.checkout(&declined, &tokens).await.0, 409);

    let relay = scrape(&world, &world.relay).await;
    for (series, expected) in [
        (r#"ctr_checkouts_total{outcome="completed"}"#, 1.0),
        (r#"ctr_checkouts_total{outcome="failed"}"#, 1.0),
        // The replay: refused before anything was redeemed.
        (r#"ctr_checkouts_total{outcome="refused"}"#, 1.0),
        (
            r#"ctr_problems_total{listener="public",status="409",type="order-not-open"}"#,
            1.0,
        ),
        (
            r#"ctr_problems_total{listener="public",status="409",type="redemption-refused"}"#,
            1.0,
        ),
        (
            r#"ctr_compensations_total{capability="coupons:redeem",outcome="reversed"}"#,
            1.0,
        ),
        (
            r#"ctr_compensations_total{capability="points:redeem",outcome="reversed"}"#,
            1.0,
        ),
        (
            r#"ctr_redemption_duration_seconds_count{capability="payments:capture",outcome="redeemed"}"#,
            1.0,
        ),
        (
            r#"ctr_redemption_duration_seconds_count{capability="payments:capture",outcome="failed"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&relay, series), expected, "{series} in\n{relay}");
    }

    // The payments domain answered the declined capture with a problem, counted there.
    let payments = scrape(&world, &world.payments.running).await;
    assert_eq!(
        sample(
            &payments,
            r#"ctr_problems_total{listener="public",status="402",type="payment-declined"}"#
        ),
        1.0,
        "{payments}"
    );

    // A hold placed and not redeemed shows in the points domain's gauge (counted every 2 s).
    let open = world.open_order("c_alice", 4999).await;
    assert_eq!(world.confirm_points(&open, "c_alice", 10).await.0, 201);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let points = scrape(&world, &world.points.running).await;
        if sample(&points, "ctr_holds_open") >= 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{points}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The scrape listener serves the metrics and nothing else.
    let addr = world.relay.metrics.unwrap();
    for path in [
        "/admin/v1/healthz",
        "/admin/v1/shutdown",
        "/service/v1/orders",
    ] {
        let status = world
            .customer
            .get(format!("https://127.0.0.1:{}{path}", addr.port()))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{path}");
    }
}
