//! Interop with an issuer nobody on the project wrote: Authlib's RFC 9068 token generator and
//! client-credentials grant (tests/oidc/authlib_issuer.py) over HTTPS, ES256 and RS256. The
//! services find it by its issuer URL, as they would Keycloak or Auth0; a whole checkout runs
//! on its tokens, and hostile variants of them are refused.
//!
//! Needs `CTR_TEST_AUTHLIB_PYTHON` (`export CTR_TEST_AUTHLIB_PYTHON=$(tests/oidc/setup.sh)`);
//! without it the test fails under CI and says how to run it elsewhere.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ctr_service_kit::testing::{DEV_ISSUER, TestPki};
use ctr_system_tests::{World, domain_settings, problem_type};
use serde_json::{Value, json};

struct Authlib {
    child: Child,
    url: String,
}

impl Drop for Authlib {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the fixture with `pki`'s `dev-issuer` leaf; `None` when no interpreter is configured
/// outside CI.
fn authlib(pki: &TestPki) -> Option<Authlib> {
    let python = ctr_system_tests::authlib_python("the Authlib interop test")?;
    let leaf = ctr_pki::IdentityFiles::server(pki.dir(), DEV_ISSUER);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../oidc/authlib_issuer.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg("--cert")
        .arg(&leaf.cert)
        .arg("--key")
        .arg(&leaf.key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("the Authlib fixture: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("the Authlib fixture did not start: {line:?}"))
        .trim()
        .to_owned();
    Some(Authlib { child, url })
}

/// A client-credentials token of `client` (HTTP Basic), with `scope` if given.
async fn token(world: &World, fixture: &Authlib, client: &str, scope: Option<&str>) -> String {
    let endpoint = format!("{}/token", fixture.url);
    ctr_access::client_credentials(
        &world.anonymous(),
        &endpoint,
        client,
        "fixture-secret",
        scope,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("no token for {client}: {e}"))
}

fn part(token: &str, index: usize) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(index).unwrap())
            .unwrap(),
    )
    .unwrap()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// `token` with its header changed by `change` (the signature no longer matches).
fn reheader(token: &str, change: Value) -> String {
    let mut header = part(token, 0);
    for (key, value) in change.as_object().unwrap() {
        header[key] = value.clone();
    }
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[0] = b64(&header);
    parts.join(".")
}

#[tokio::test]
async fn a_checkout_runs_on_authlib_tokens_and_hostile_variants_are_refused() {
    let pki = TestPki::new();
    let Some(fixture) = authlib(&pki) else {
        return;
    };
    pki.trust_customer_issuer(&fixture.url);
    let world = World::start_in(
        pki,
        domain_settings(),
        |_| {},
        |server| {
            server.access.auth_leeway = std::time::Duration::from_secs(1);
        },
    )
    .await;

    // Alice's tokens are ES256, Bob's RS256: each runs a whole checkout.
    for (customer, method, alg) in [
        ("c_alice", "pm_alice_visa", "ES256"),
        ("c_bob", "pm_bob_mastercard", "RS256"),
    ] {
        let access = token(&world, &fixture, customer, None).await;
        assert_eq!(part(&access, 0)["alg"], alg);
        assert_eq!(part(&access, 0)["typ"], "at+jwt");
        let orders = world.relay.url("/service/v1/orders");
        let (status, order) = world
            .post_with(
                Some(&access),
                orders,
                json!({"total": {"amount": 4999, "currency": "EUR"}}),
            )
            .await;
        assert_eq!(
            (status, &order["customer_id"]),
            (201, &json!(customer)),
            "{order}"
        );
        let order = order["order_processing_id"].as_str().unwrap().to_owned();
        let confirm = |service: &str| format!("/service/v1/{service}/confirmations");
        let (coupon, points, payment) = (
            world.post_with(Some(&access), world.coupons.running.url(&confirm("coupons")),
                json!({"order_processing_id": order, "coupon_code": "SPRING10", "order_total": {"amount": 4999, "currency": "EUR"}})).await,
            world.post_with(Some(&access), world.points.running.url(&confirm("points")),
                json!({"order_processing_id": order, "points": 500, "currency": "EUR"})).await,
            world.post_with(Some(&access), world.payments.running.url(&confirm("payments")),
                json!({"order_processing_id": order, "payment_method_id": method, "amount": {"amount": 3999, "currency": "EUR"}})).await,
        );
        for (status, body) in [&coupon, &points, &payment] {
            assert_eq!(*status, 201, "{customer}: {body}");
        }
        let tokens: Vec<&str> = [&coupon, &points, &payment]
            .iter()
            .map(|(_, b)| b["token"].as_str().unwrap())
            .collect();
        let (status, view) = world
            .post_with(
                Some(&access),
                world
                    .relay
                    .url(&format!("/service/v1/orders/{order}/checkout")),
                json!({"tokens": tokens}),
            )
            .await;
        assert_eq!(
            (status, &view["status"]),
            (200, &json!("completed")),
            "{customer}: {view}"
        );
        let (status, balance) = world
            .get_with(
                Some(&access),
                world
                    .points
                    .running
                    .url(&format!("/service/v1/points/{customer}")),
            )
            .await;
        assert_eq!((status, &balance["spent"]), (200, &json!(500)), "{balance}");
    }

    // Hostile variants of real Authlib tokens.
    let alice = token(&world, &fixture, "c_alice", None).await;
    let bob = token(&world, &fixture, "c_bob", None).await;
    let jwks = world
        .anonymous()
        .get(format!("{}/jwks", fixture.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hmac = crate::auth::hmac_keyed_with(&jwks, "fixture-es256", &part(&alice, 1));
    let expiring = token(&world, &fixture, "c_dave", None).await;
    let cases = vec![
        (
            "another audience",
            token(&world, &fixture, "c_carol", None).await,
            401,
            "access-token-audience",
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "at+jwt"})),
                alice.split('.').nth(1).unwrap()
            ),
            401,
            "access-token-algorithm",
        ),
        (
            "HMAC keyed with the issuer's public keys",
            hmac,
            401,
            "access-token-algorithm",
        ),
        (
            "jku header",
            reheader(&alice, json!({"jku": "https://evil.example/jwks"})),
            401,
            "access-token-header",
        ),
        (
            "jwk header",
            reheader(
                &alice,
                json!({"jwk": serde_json::from_str::<Value>(&jwks).unwrap()["keys"][0]}),
            ),
            401,
            "access-token-header",
        ),
        (
            "x5u header",
            reheader(&alice, json!({"x5u": "https://evil.example/cert"})),
            401,
            "access-token-header",
        ),
        (
            "typ JWT",
            reheader(&alice, json!({"typ": "JWT"})),
            401,
            "access-token-type",
        ),
        (
            "RS256 header on the ES256 key",
            reheader(&alice, json!({"alg": "RS256"})),
            401,
            "access-token-algorithm",
        ),
        (
            "missing scope",
            token(&world, &fixture, "c_alice", Some("orders:read")).await,
            403,
            "insufficient-scope",
        ),
        // The world's own development issuer is not the one configured: its key is unknown.
        (
            "a token of another issuer",
            world.token("c_alice"),
            401,
            "access-token-key-unknown",
        ),
    ];
    // Let the short-lived token run out (leeway 1 s).
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let orders = world.relay.url("/service/v1/orders");
    let body = json!({"total": {"amount": 4999, "currency": "EUR"}});
    for (case, access, status, slug) in
        cases
            .into_iter()
            .chain([("expired", expiring, 401, "access-token-expired")])
    {
        let (got, answer) = world
            .post_with(Some(&access), orders.clone(), body.clone())
            .await;
        assert_eq!(
            (got, problem_type(&answer)),
            (status, slug),
            "{case}: {answer}"
        );
        assert!(
            !answer
                .to_string()
                .contains(access.rsplit('.').next().unwrap_or("-"))
                || access.ends_with('.'),
            "{case}: echoed"
        );
    }
    // A token of another customer reads nothing of Alice's.
    let (status, _) = world
        .get_with(
            Some(&bob),
            world.points.running.url("/service/v1/points/c_alice"),
        )
        .await;
    assert_eq!(status, 404);
}
