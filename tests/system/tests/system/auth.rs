//! Customers are who their access token says: every customer endpoint refuses a request
//! without a valid RFC 9068 token before any work, nobody acts or reads as another customer,
//! and the per-customer limits count the authenticated customer.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ctr_system_tests::{World, problem_type};
use serde_json::{Value, json};

const ORDER_BODY: fn() -> Value = || json!({"total": {"amount": 4999, "currency": "EUR"}});

/// Every customer endpoint of the world, with a body that would do something.
fn customer_endpoints(
    world: &World,
    order: &str,
    jti: &str,
) -> Vec<(&'static str, String, Option<Value>)> {
    let confirm = |service: &str| format!("/service/v1/{service}/confirmations");
    vec![
        (
            "POST",
            world.relay.url("/service/v1/orders"),
            Some(ORDER_BODY()),
        ),
        (
            "GET",
            world.relay.url(&format!("/service/v1/orders/{order}")),
            None,
        ),
        (
            "POST",
            world
                .relay
                .url(&format!("/service/v1/orders/{order}/checkout")),
            Some(json!({"tokens": ["a.b.c"]})),
        ),
        (
            "POST",
            world.coupons.running.url(&confirm("coupons")),
            Some(
                json!({"order_processing_id": order, "coupon_code": "SPRING10",
                        "order_total": {"amount": 4999, "currency": "EUR"}}),
            ),
        ),
        (
            "POST",
            world.points.running.url(&confirm("points")),
            Some(json!({"order_processing_id": order, "points": 5000, "currency": "EUR"})),
        ),
        (
            "POST",
            world.payments.running.url(&confirm("payments")),
            Some(
                json!({"order_processing_id": order, "payment_method_id": "pm_alice_visa",
                        "amount": {"amount": 3999, "currency": "EUR"}}),
            ),
        ),
        (
            "GET",
            world
                .coupons
                .running
                .url(&format!("/service/v1/coupons/holds/{jti}")),
            None,
        ),
        (
            "GET",
            world
                .points
                .running
                .url(&format!("/service/v1/points/holds/{jti}")),
            None,
        ),
        (
            "GET",
            world
                .payments
                .running
                .url(&format!("/service/v1/payments/holds/{jti}")),
            None,
        ),
        (
            "GET",
            world.points.running.url("/service/v1/points/c_alice"),
            None,
        ),
        (
            "GET",
            world
                .payments
                .running
                .url(&format!("/service/v1/payments/{jti}")),
            None,
        ),
    ]
}

/// Sends one request with `authorization` as its header (none: no header): status,
/// `WWW-Authenticate`, the body's text.
async fn send(
    world: &World,
    method: &str,
    url: &str,
    body: Option<&Value>,
    authorization: Option<&str>,
) -> (u16, Option<String>, String) {
    let client = world.anonymous();
    let mut request = match method {
        "GET" => client.get(url),
        _ => client.post(url).json(body.unwrap_or(&Value::Null)),
    };
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, challenge, response.text().await.unwrap())
}

fn slug(text: &str) -> String {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    problem_type(&body).to_owned()
}

#[tokio::test]
async fn without_a_valid_token_every_customer_endpoint_answers_401_with_a_challenge_and_writes_nothing()
 {
    let world = World::start_with(|s| s.max_open_orders_per_customer = 1).await;
    let order = world.open_order("c_alice", 4999).await;
    let (status, hold) = world.confirm_points(&order, "c_alice", 100).await;
    assert_eq!(status, 201, "{hold}");
    let jti = hold["jti"].as_str().unwrap().to_owned();
    let before = world.customer_rows().await;
    let balance = world.balance("c_alice").await;

    for (method, url, body) in customer_endpoints(&world, &order, &jti) {
        for authorization in [
            None,
            Some("Basic YzphbGljZTpkZW1v"),
            Some("Bearer"),
            Some("Bearer not-a-jwt"),
        ] {
            let (status, challenge, text) =
                send(&world, method, &url, body.as_ref(), authorization).await;
            let challenge = challenge.unwrap_or_default();
            match authorization {
                None | Some("Basic YzphbGljZTpkZW1v") => {
                    assert_eq!(
                        (status, slug(&text).as_str()),
                        (401, "access-token-missing"),
                        "{method} {url}: {text}"
                    );
                    // Both schemes are offered (RFC 9449 section 7.1), no error code.
                    assert_eq!(
                        challenge,
                        "Bearer realm=\"ctr\", DPoP realm=\"ctr\", algs=\"ES256 ES384 EdDSA PS256 RS256\"",
                        "{method} {url}"
                    );
                }
                Some("Bearer") => {
                    assert_eq!(
                        (status, slug(&text).as_str()),
                        (400, "authorization-header-invalid"),
                        "{method} {url}: {text}"
                    );
                    assert!(
                        challenge.contains("error=\"invalid_request\""),
                        "{challenge}"
                    );
                }
                _ => {
                    assert_eq!(
                        (status, slug(&text).as_str()),
                        (401, "access-token-malformed"),
                        "{method} {url}: {text}"
                    );
                    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
                    assert!(!text.contains("not-a-jwt"), "the token is echoed: {text}");
                }
            }
        }
    }

    assert_eq!(
        world.customer_rows().await,
        before,
        "a refused request wrote something"
    );
    assert_eq!(world.balance("c_alice").await, balance);
    // Alice's cap of one open order and her rate were not spent by the refused requests: her
    // order is still the only one, and the first order she opens once it ends is served.
    let (status, body) = world
        .post(world.relay.url("/service/v1/orders"), ORDER_BODY())
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (429, "too-many-open-orders"),
        "{body}"
    );
}

#[tokio::test]
async fn nobody_acts_as_another_customer() {
    let world = World::start().await;
    let bob = world.token("c_bob");
    let before = world.customer_rows().await;
    // An order in Alice's name, with Bob's token.
    let body = json!({"customer_id": "c_alice", "total": {"amount": 4999, "currency": "EUR"}});
    let (status, answer) = world
        .post_with(Some(&bob), world.relay.url("/service/v1/orders"), body)
        .await;
    assert_eq!(
        (status, problem_type(&answer)),
        (403, "customer-mismatch"),
        "{answer}"
    );

    // Confirmations of Alice's coupon, points and card, with Bob's token.
    let order = world.open_order("c_alice", 4999).await;
    let after_order = world.customer_rows().await;
    let bodies = [
        (
            "coupons",
            json!({"order_processing_id": order, "customer_id": "c_alice", "coupon_code": "WELCOME-ALICE",
                           "order_total": {"amount": 4999, "currency": "EUR"}}),
        ),
        (
            "points",
            json!({"order_processing_id": order, "customer_id": "c_alice", "points": 5000, "currency": "EUR"}),
        ),
        (
            "payments",
            json!({"order_processing_id": order, "customer_id": "c_alice", "payment_method_id": "pm_alice_visa",
                            "amount": {"amount": 3999, "currency": "EUR"}}),
        ),
    ];
    for (service, body) in bodies.clone() {
        let url = match service {
            "coupons" => world
                .coupons
                .running
                .url("/service/v1/coupons/confirmations"),
            "points" => world.points.running.url("/service/v1/points/confirmations"),
            _ => world
                .payments
                .running
                .url("/service/v1/payments/confirmations"),
        };
        let (status, answer) = world.post_with(Some(&bob), url.clone(), body.clone()).await;
        assert_eq!(
            (status, problem_type(&answer)),
            (403, "customer-mismatch"),
            "{service}: {answer}"
        );
        // Without `customer_id` the hold is Bob's own: Alice's card and coupon are not his.
        let mut anonymous_body = body;
        anonymous_body
            .as_object_mut()
            .unwrap()
            .remove("customer_id");
        let (status, answer) = world.post_with(Some(&bob), url, anonymous_body).await;
        match service {
            "coupons" => assert_eq!(
                (status, problem_type(&answer)),
                (422, "coupon-not-for-customer"),
                "{answer}"
            ),
            "points" => assert_eq!(
                (status, problem_type(&answer)),
                (422, "insufficient-points"),
                "{answer}"
            ),
            _ => assert_eq!(
                (status, problem_type(&answer)),
                (404, "payment-method-not-found"),
                "{answer}"
            ),
        }
    }
    assert_eq!(before.len(), after_order.len());
    assert_eq!(
        world.customer_rows().await,
        after_order,
        "Bob's attempts placed holds"
    );

    // Alice's own tokens, checked out by Bob: the order is not his to know of.
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let (status, answer) = world
        .post_with(
            Some(&bob),
            world
                .relay
                .url(&format!("/service/v1/orders/{order}/checkout")),
            json!({"tokens": tokens}),
        )
        .await;
    assert_eq!(
        (status, problem_type(&answer)),
        (404, "order-not-found"),
        "{answer}"
    );
    let (_, view) = world
        .get(world.relay.url(&format!("/service/v1/orders/{order}")))
        .await;
    assert_eq!(view["status"], "open", "{view}");
    let (status, view) = world.checkout(&order, &tokens).await;
    assert_eq!(
        (status, &view["status"]),
        (200, &json!("completed")),
        "{view}"
    );
}

#[tokio::test]
async fn a_confirmation_token_is_bound_to_the_authenticated_customer() {
    let world = World::start().await;
    let order = world
        .post_with(
            Some(&world.token("c_bob")),
            world.relay.url("/service/v1/orders"),
            ORDER_BODY(),
        )
        .await;
    assert_eq!(order.0, 201, "{}", order.1);
    assert_eq!(order.1["customer_id"], "c_bob");
    let order = order.1["order_processing_id"].as_str().unwrap();
    let (status, hold) = world
        .post_with(
            Some(&world.token("c_bob")),
            world.points.running.url("/service/v1/points/confirmations"),
            json!({"order_processing_id": order, "points": 100, "currency": "EUR"}),
        )
        .await;
    assert_eq!(status, 201, "{hold}");
    assert_eq!(hold["customer_id"], "c_bob");
    let claims = ctr_system_tests::jws_part(hold["token"].as_str().unwrap(), 1);
    assert_eq!(claims["sub"], "c_bob");
}

#[tokio::test]
async fn reads_answer_only_the_owner_and_others_get_the_404_of_an_unknown_id() {
    let world = World::start().await;
    let order = world.open_order("c_alice", 4999).await;
    let tokens = world.three_tokens(&order, "c_alice", "pm_alice_visa").await;
    let jtis: Vec<String> = tokens
        .iter()
        .map(|t| {
            let claims: Value = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(t.split('.').nth(1).unwrap())
                    .unwrap(),
            )
            .unwrap();
            claims["jti"].as_str().unwrap().to_owned()
        })
        .collect();
    let unknown = uuid::Uuid::now_v7().to_string();
    let unknown_order = "op_0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e";
    let reads = |jti: &str, order: &str| {
        vec![
            world.relay.url(&format!("/service/v1/orders/{order}")),
            world
                .coupons
                .running
                .url(&format!("/service/v1/coupons/holds/{jti}")),
            world
                .points
                .running
                .url(&format!("/service/v1/points/holds/{jti}")),
            world
                .payments
                .running
                .url(&format!("/service/v1/payments/holds/{jti}")),
            world
                .payments
                .running
                .url(&format!("/service/v1/payments/{jti}")),
        ]
    };
    let bob = world.token("c_bob");
    let owned = [
        reads(&jtis[0], &order)[..2].to_vec(),
        vec![reads(&jtis[1], &order)[2].clone()],
        reads(&jtis[2], &order)[3..].to_vec(),
    ]
    .concat();
    let strangers = [
        reads(&unknown, unknown_order)[..2].to_vec(),
        reads(&unknown, unknown_order)[2..].to_vec(),
    ]
    .concat();
    for (mine, unknown) in owned.iter().zip(&strangers) {
        let (status, body) = world.get(mine.clone()).await;
        assert_eq!(status, 200, "the owner reads {mine}: {body}");
        let (status, body) = world.get_with(Some(&bob), mine.clone()).await;
        let (unknown_status, unknown_body) = world.get_with(Some(&bob), unknown.clone()).await;
        assert_eq!(status, 404, "another customer reads {mine}: {body}");
        assert_eq!(
            (status, problem_type(&body)),
            (unknown_status, problem_type(&unknown_body)),
            "{mine}"
        );
        assert_eq!(body["detail"], unknown_body["detail"], "{mine}");
    }
    // A balance is its owner's alone.
    let (status, body) = world
        .get_with(
            Some(&bob),
            world.points.running.url("/service/v1/points/c_alice"),
        )
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (404, "customer-not-found"),
        "{body}"
    );
    let (status, body) = world
        .get_with(
            Some(&bob),
            world.points.running.url("/service/v1/points/c_bob"),
        )
        .await;
    assert_eq!((status, &body["available"]), (200, &json!(1200)), "{body}");
}

#[tokio::test]
async fn limits_count_the_authenticated_customer_not_the_body() {
    let world = World::start_tuned(
        ctr_system_tests::domain_settings(),
        |_| {},
        |server| {
            server.customer_rate = 1;
            server.customer_burst = 3;
        },
    )
    .await;
    let url = world.relay.url("/service/v1/orders");
    let as_customer = |customer: &str| world.token(customer);
    // Bob's token, whatever the body says, spends Bob's budget: three, then 429.
    for _ in 0..3 {
        let (status, body) = world
            .post_with(Some(&as_customer("c_bob")), url.clone(), ORDER_BODY())
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = world
        .post_with(Some(&as_customer("c_bob")), url.clone(), ORDER_BODY())
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (429, "rate-limited"),
        "{body}"
    );
    // Refused requests in Alice's name spent nothing of hers.
    for _ in 0..10 {
        let body = json!({"customer_id": "c_alice", "total": {"amount": 4999, "currency": "EUR"}});
        let (status, _) = world.post_with(None, url.clone(), body.clone()).await;
        assert_eq!(status, 401);
        let (status, _) = world
            .post_with(Some(&as_customer("c_bob")), url.clone(), body)
            .await;
        assert!([403, 429].contains(&status));
    }
    for _ in 0..3 {
        let (status, body) = world
            .post_with(Some(&as_customer("c_alice")), url.clone(), ORDER_BODY())
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

/// Claims of a valid token for c_alice from `world`'s issuer.
fn claims(world: &World) -> Value {
    let now = dev_issuer::unix_now();
    json!({
        "iss": world.issuer.issuer.url(), "sub": "c_alice", "aud": "ctr", "client_id": "c_alice",
        "scope": ctr_service_kit::scopes::ALL.join(" "), "iat": now, "exp": now + 600,
        "jti": uuid::Uuid::now_v7().to_string(),
    })
}

fn with(mut value: Value, changes: Value) -> Value {
    for (key, change) in changes.as_object().unwrap() {
        if change.is_null() {
            value.as_object_mut().unwrap().remove(key);
        } else {
            value[key] = change.clone();
        }
    }
    value
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// The classic confusion attack: `claims` "signed" HS256 with the issuer's public key set as
/// the secret, naming the issuer's key `kid`.
pub fn hmac_keyed_with(public_jwks: &str, kid: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(public_jwks.as_bytes()),
    )
    .unwrap()
}

/// Tokens wrong in one way each, and the problem each must get.
pub fn hostile_tokens(
    sign: &dyn Fn(&Value, &Value) -> String,
    valid: &Value,
    public_jwks: &str,
    kid: &str,
) -> Vec<(&'static str, String, u16, &'static str)> {
    let at = json!({"typ": "at+jwt"});
    let now = dev_issuer::unix_now();
    let hmac = hmac_keyed_with(public_jwks, kid, valid);
    let good = sign(&at, valid);
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_payload = b64(&with(valid.clone(), json!({"sub": "c_bob"})));
    parts[1] = &forged_payload;
    let tampered = parts.join(".");
    vec![
        (
            "expired",
            sign(
                &at,
                &with(valid.clone(), json!({"exp": now - 3600, "iat": now - 7200})),
            ),
            401,
            "access-token-expired",
        ),
        (
            "not yet valid (nbf)",
            sign(&at, &with(valid.clone(), json!({"nbf": now + 3600}))),
            401,
            "access-token-not-yet-valid",
        ),
        (
            "issued in the future",
            sign(&at, &with(valid.clone(), json!({"iat": now + 3600}))),
            401,
            "access-token-not-yet-valid",
        ),
        (
            "another audience",
            sign(&at, &with(valid.clone(), json!({"aud": "another-api"}))),
            401,
            "access-token-audience",
        ),
        (
            "another issuer",
            sign(
                &at,
                &with(valid.clone(), json!({"iss": "https://evil.example"})),
            ),
            401,
            "access-token-issuer",
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "at+jwt"})),
                b64(valid)
            ),
            401,
            "access-token-algorithm",
        ),
        (
            "HMAC keyed with the public key",
            hmac,
            401,
            "access-token-algorithm",
        ),
        (
            "jku header",
            sign(
                &json!({"typ": "at+jwt", "jku": "https://evil.example/jwks"}),
                valid,
            ),
            401,
            "access-token-header",
        ),
        (
            "jwk header",
            sign(&json!({"typ": "at+jwt", "jwk": {"kty": "EC"}}), valid),
            401,
            "access-token-header",
        ),
        (
            "x5u header",
            sign(
                &json!({"typ": "at+jwt", "x5u": "https://evil.example/cert"}),
                valid,
            ),
            401,
            "access-token-header",
        ),
        (
            "typ JWT",
            sign(&json!({"typ": "JWT"}), valid),
            401,
            "access-token-type",
        ),
        ("no typ", sign(&json!({}), valid), 401, "access-token-type"),
        (
            "unknown kid",
            sign(&json!({"typ": "at+jwt", "kid": "nobody"}), valid),
            401,
            "access-token-key-unknown",
        ),
        ("tampered claims", tampered, 401, "access-token-signature"),
        (
            "no sub",
            sign(&at, &with(valid.clone(), json!({"sub": null}))),
            401,
            "access-token-claims",
        ),
        (
            "no client_id",
            sign(&at, &with(valid.clone(), json!({"client_id": null}))),
            401,
            "access-token-claims",
        ),
        (
            "a subject that is no customer id",
            sign(
                &at,
                &with(valid.clone(), json!({"sub": "alice@example.com"})),
            ),
            401,
            "access-token-claims",
        ),
        (
            "missing scope",
            sign(&at, &with(valid.clone(), json!({"scope": "orders:read"}))),
            403,
            "insufficient-scope",
        ),
    ]
}

#[tokio::test]
async fn hostile_access_tokens_each_get_a_problem_of_their_own_and_change_nothing() {
    let world = World::start().await;
    let issuer = world.issuer.issuer.clone();
    let sign = move |header: &Value, claims: &Value| issuer.sign(header, claims);
    let jwks = world.issuer.issuer.signing_key().jwks().to_string();
    let kid = world.issuer.issuer.signing_key().kid().to_owned();
    let url = world.relay.url("/service/v1/orders");
    let before = world.customer_rows().await;
    for (case, token, status, expected) in hostile_tokens(&sign, &claims(&world), &jwks, &kid) {
        let (got, challenge, text) = send(
            &world,
            "POST",
            &url,
            Some(&ORDER_BODY()),
            Some(&format!("Bearer {token}")),
        )
        .await;
        assert_eq!(
            (got, slug(&text).as_str()),
            (status, expected),
            "{case}: {text}"
        );
        let challenge = challenge.unwrap_or_default();
        let code = if status == 403 {
            "insufficient_scope"
        } else {
            "invalid_token"
        };
        assert!(
            challenge.contains(&format!("error=\"{code}\"")),
            "{case}: {challenge}"
        );
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            signature.is_empty() || !text.contains(signature),
            "{case}: the token is echoed"
        );
    }
    assert_eq!(world.customer_rows().await, before);
    // The valid one is served.
    let token = world
        .issuer
        .issuer
        .sign(&json!({"typ": "at+jwt"}), &claims(&world));
    let (status, _, text) = send(
        &world,
        "POST",
        &url,
        Some(&ORDER_BODY()),
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(status, 201, "{text}");
}

#[tokio::test]
async fn a_service_may_accept_issuers_that_do_not_send_at_jwt_when_configured() {
    let world = World::start_tuned(
        ctr_system_tests::domain_settings(),
        |_| {},
        |server| {
            server.access.auth_require_at_jwt = false;
        },
    )
    .await;
    let url = world.relay.url("/service/v1/orders");
    for header in [json!({"typ": "JWT"}), json!({})] {
        let token = world.issuer.issuer.sign(&header, &claims(&world));
        let (status, body) = world
            .post_with(Some(&token), url.clone(), ORDER_BODY())
            .await;
        assert_eq!(status, 201, "{header}: {body}");
    }
    let token = world
        .issuer
        .issuer
        .sign(&json!({"typ": "dpop+jwt"}), &claims(&world));
    let (status, body) = world.post_with(Some(&token), url, ORDER_BODY()).await;
    assert_eq!(
        (status, problem_type(&body)),
        (401, "access-token-type"),
        "{body}"
    );
}

#[tokio::test]
async fn a_key_the_issuer_withdraws_stops_verifying_within_the_refresh_interval_though_its_tokens_were_verified_before()
 {
    // Services remember verified access tokens; a remembered verification must not outlive
    // the key that made it. The world's services fetch the issuer's keys every 2 s.
    let world = World::start().await;
    let token = world.issuer.token("c_alice");
    let bearer = format!("Bearer {token}");
    let url = world.points.running.url("/service/v1/points/c_alice");
    for _ in 0..3 {
        let (status, _, body) = send(&world, "GET", &url, None, Some(&bearer)).await;
        assert_eq!(status, 200, "{body}");
    }
    world.issuer.issuer.replace_key().unwrap();
    let withdrawn = std::time::Instant::now();
    let refused = loop {
        let (status, _, body) = send(&world, "GET", &url, None, Some(&bearer)).await;
        if status != 200 {
            break (status, slug(&body));
        }
        assert!(
            withdrawn.elapsed() < std::time::Duration::from_secs(5),
            "a token of the withdrawn key still verifies after {:?}",
            withdrawn.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(refused, (401, "access-token-key-unknown".to_owned()));
    // A token of the new key verifies at once.
    let fresh = format!("Bearer {}", world.issuer.token("c_alice"));
    let (status, _, body) = send(&world, "GET", &url, None, Some(&fresh)).await;
    assert_eq!(status, 200, "{body}");
}
