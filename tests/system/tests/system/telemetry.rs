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

/// The `ctr_*` metric names in `text`, each as its family is exposed (a counter's `_total`, a
/// histogram's `_bucket`, `_sum` and `_count` stripped).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("ctr_") {
        let starts_word = at == 0
            || !rest.as_bytes()[at - 1].is_ascii_alphanumeric() && rest.as_bytes()[at - 1] != b'_';
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        if !starts_word || name == "ctr_" {
            continue;
        }
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        names.insert(family.to_owned());
    }
    names
}

#[tokio::test]
async fn every_metric_the_alert_rules_runbooks_and_dashboard_name_is_exported() {
    let world = World::start().await;
    // A checkout that completes and one whose capture is declined, so that the families that
    // only show once something happened (redemptions, compensations, signatures) have series.
    let relay = world.relay.url("");
    let (_, completed, _) = world.check_out_at(&relay, "pm_alice_visa").await;
    let (_, declined, _) = world.check_out_at(&relay, "pm_alice_declines").await;
    assert_eq!(
        (completed, declined),
        (200, 409),
        "a completed and a declined checkout"
    );
    let mut exported = std::collections::BTreeSet::new();
    for service in [
        &world.relay,
        &world.coupons.running,
        &world.points.running,
        &world.payments.running,
    ] {
        // A refusal, so that the problems' family has a series to show.
        let (status, _) = world.get(service.url("/service/v1/no-such-route")).await;
        assert_eq!(status, 404);
        let text = world
            .metrics_text(&service.admin_url("/admin/v1/metrics"))
            .await;
        for line in text.lines() {
            if let Some(family) = line.strip_prefix("# TYPE ") {
                exported.insert(family.split(' ').next().unwrap().to_owned());
            }
        }
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for file in [
        "deployments/observability/alerts.yaml",
        "deployments/observability/alerts.test.yaml",
        "docs/guide/src/operating/runbooks.md",
        "deployments/observability/grafana/dashboards/ctr.json",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let named = metric_names(&text);
        assert!(!named.is_empty(), "{file} names no metric");
        let unknown: Vec<&String> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics no service exports: {unknown:?} (exported: {exported:?})"
        );
    }
    // The readiness checks are exported as such, at each scrape.
    let text = world
        .metrics_text(&world.points.running.admin_url("/admin/v1/metrics"))
        .await;
    assert!(
        text.contains("ctr_health_check{check=\"store\"} 1"),
        "{text}"
    );
    assert!(text.contains("ctr_ready 1"), "{text}");
}
