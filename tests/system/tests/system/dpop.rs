//! Sender-constrained capabilities (RFC 9449): a customer whose access token is bound to a
//! key proves it on every request; the confirmation tokens the domains sign carry the key's
//! thumbprint; the relay checks them out only for a request that proves that key. Every bad
//! proof is a 401 of its own type with a `DPoP` challenge, and changes nothing.

use std::time::Duration;

use ctr_access::dpop::{ProofKey, access_token_hash};
use ctr_system_tests::{World, jws_part, outcomes, problem_type};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

/// A customer's client: an access token bound to its key.
pub(crate) struct Holder {
    pub(crate) token: String,
    pub(crate) key: ProofKey,
}

impl Holder {
    pub(crate) fn new(world: &World, customer: &str) -> Self {
        Self::with(
            world,
            customer,
            ProofKey::generate(Algorithm::ES256).unwrap(),
        )
    }

    fn with(world: &World, customer: &str, key: ProofKey) -> Self {
        let token = world.issuer.issuer.mint_bound(
            customer,
            &ctr_service_kit::scopes::ALL,
            Duration::from_secs(3600),
            Some(key.thumbprint()),
        );
        Self { token, key }
    }

    fn proof(&self, method: &str, url: &str) -> String {
        self.key.proof(method, url, Some(&self.token)).unwrap()
    }

    async fn post(&self, world: &World, url: &str, body: Value) -> Answer {
        let proof = self.proof("POST", url);
        send(
            world,
            "POST",
            url,
            Some(body),
            Some(&format!("DPoP {}", self.token)),
            &[proof],
        )
        .await
    }

    async fn get(&self, world: &World, url: &str) -> Answer {
        let proof = self.proof("GET", url);
        send(
            world,
            "GET",
            url,
            None,
            Some(&format!("DPoP {}", self.token)),
            &[proof],
        )
        .await
    }
}

/// An answer: status, body and its `WWW-Authenticate` challenge.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
    challenge: String,
    raw: String,
}

pub(crate) async fn send(
    world: &World,
    method: &str,
    url: &str,
    body: Option<Value>,
    authorization: Option<&str>,
    proofs: &[String],
) -> Answer {
    let mut request = match method {
        "GET" => world.anonymous().get(url),
        _ => world.anonymous().post(url),
    };
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    for proof in proofs {
        request = request.header("dpop", proof);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(", ");
    let raw = response.text().await.unwrap();
    Answer {
        status,
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        challenge,
        raw,
    }
}

fn eur(amount: u64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

/// Opens a 49.99 EUR order and confirms coupon, points and card for it, all as `holder`.
async fn order_with_tokens(world: &World, holder: &Holder) -> (String, Vec<String>) {
    let opened = holder
        .post(
            world,
            &world.relay.url("/service/v1/orders"),
            json!({"total": eur(4999)}),
        )
        .await;
    assert_eq!(opened.status, 201, "{:?}", opened.body);
    let order = opened.body["order_processing_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let confirmations = [
        (
            world
                .coupons
                .running
                .url("/service/v1/coupons/confirmations"),
            json!({"order_processing_id": order, "coupon_code": "SPRING10", "order_total": eur(4999)}),
        ),
        (
            world.points.running.url("/service/v1/points/confirmations"),
            json!({"order_processing_id": order, "points": 10, "currency": "EUR"}),
        ),
        (
            world
                .payments
                .running
                .url("/service/v1/payments/confirmations"),
            json!({"order_processing_id": order, "payment_method_id": "pm_alice_visa", "amount": eur(4489)}),
        ),
    ];
    let mut tokens = Vec::new();
    for (url, body) in confirmations {
        let confirmed = holder.post(world, &url, body).await;
        assert_eq!(confirmed.status, 201, "{url}: {:?}", confirmed.body);
        tokens.push(confirmed.body["token"].as_str().unwrap().to_owned());
    }
    (order, tokens)
}

fn checkout_url(world: &World, order: &str) -> String {
    world
        .relay
        .url(&format!("/service/v1/orders/{order}/checkout"))
}

#[tokio::test]
async fn a_dpop_bound_customer_checks_out_with_tokens_bound_to_its_key() {
    let world = World::start().await;
    let alice = Holder::new(&world, "c_alice");
    let (order, tokens) = order_with_tokens(&world, &alice).await;
    for token in &tokens {
        assert_eq!(
            jws_part(token, 1)["cnf"]["jkt"],
            alice.key.thumbprint(),
            "{}",
            jws_part(token, 1)
        );
    }
    let shown = alice
        .get(
            &world,
            &world.relay.url(&format!("/service/v1/orders/{order}")),
        )
        .await;
    assert_eq!(
        (shown.status, shown.body["status"].as_str()),
        (200, Some("open"))
    );
    let done = alice
        .post(
            &world,
            &checkout_url(&world, &order),
            json!({"tokens": tokens}),
        )
        .await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.body["status"], "completed");
    // A P-384 key works the same way.
    let p384 = Holder::with(
        &world,
        "c_alice",
        ProofKey::generate(Algorithm::ES384).unwrap(),
    );
    let balance = p384
        .get(
            &world,
            &world.points.running.url("/service/v1/points/c_alice"),
        )
        .await;
    assert_eq!(balance.status, 200, "{:?}", balance.body);
}

#[tokio::test]
async fn a_stolen_confirmation_token_is_refused_and_nothing_is_redeemed() {
    let world = World::start().await;
    let alice = Holder::new(&world, "c_alice");
    let (order, tokens) = order_with_tokens(&world, &alice).await;
    let url = checkout_url(&world, &order);
    let body = json!({ "tokens": tokens });
    let before = world.customer_rows().await;
    let balance = world.balance("c_alice").await;

    // The thief has Alice's access token and her confirmation tokens, not her key.
    let thief = ProofKey::generate(Algorithm::ES256).unwrap();
    let proof = thief.proof("POST", &url, Some(&alice.token)).unwrap();
    let stolen = send(
        &world,
        "POST",
        &url,
        Some(body.clone()),
        Some(&format!("DPoP {}", alice.token)),
        &[proof],
    )
    .await;
    assert_eq!(
        (stolen.status, problem_type(&stolen.body)),
        (401, "dpop-key-mismatch"),
        "{:?}",
        stolen.body
    );
    assert!(
        stolen.challenge.starts_with("DPoP "),
        "{}",
        stolen.challenge
    );
    assert!(
        stolen.challenge.contains("error=\"invalid_dpop_proof\""),
        "{}",
        stolen.challenge
    );

    // Another client of Alice's, bound to another key, presents her tokens.
    let elsewhere = Holder::new(&world, "c_alice");
    let answer = elsewhere.post(&world, &url, body.clone()).await;
    assert_eq!(
        (answer.status, problem_type(&answer.body)),
        (401, "capability-key-mismatch"),
        "{:?}",
        answer.body
    );
    assert_eq!(answer.body["token_index"], 0);
    assert!(
        answer.challenge.contains("error=\"invalid_dpop_proof\""),
        "{}",
        answer.challenge
    );

    // A bearer client of Alice's (no key at all) presents them.
    let (status, refused) = world
        .post_with(Some(&world.token("c_alice")), url.clone(), body.clone())
        .await;
    assert_eq!(
        (status, problem_type(&refused)),
        (401, "capability-key-mismatch"),
        "{refused}"
    );

    for answer in [&stolen.raw, &answer.raw, &refused.to_string()] {
        for token in &tokens {
            assert!(!answer.contains(token.as_str()), "a token echoed: {answer}");
        }
        assert!(!answer.contains(&alice.token));
    }
    assert_eq!(world.customer_rows().await, before, "nothing written");
    assert_eq!(world.balance("c_alice").await, balance, "nothing redeemed");
    let shown = alice
        .get(
            &world,
            &world.relay.url(&format!("/service/v1/orders/{order}")),
        )
        .await;
    assert_eq!(shown.body["status"], "open");

    // Alice, with her key, checks the same tokens out.
    let done = alice.post(&world, &url, body).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(outcomes(&done.body), ["redeemed", "redeemed", "redeemed"]);
}

/// `proof` edited by `edit`, signed again by `key` or keeping its signature.
fn edited(
    key: &ProofKey,
    proof: &str,
    edit: impl FnOnce(&mut Value, &mut Value),
    resign: bool,
) -> String {
    key.edited(proof, edit, resign).unwrap()
}

#[tokio::test]
async fn every_bad_proof_is_a_401_of_its_own_type_and_changes_nothing() {
    let world = World::start().await;
    let alice = Holder::new(&world, "c_alice");
    let url = world.relay.url("/service/v1/orders");
    let body = json!({"total": eur(4999)});
    let dpop = format!("DPoP {}", alice.token);
    let good = || alice.proof("POST", &url);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // A proof used once, then replayed.
    let used = good();
    let first = send(
        &world,
        "POST",
        &url,
        Some(body.clone()),
        Some(&dpop),
        std::slice::from_ref(&used),
    )
    .await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    let before = world.customer_rows().await;

    let other_key = ProofKey::generate(Algorithm::ES256).unwrap();
    let unbound = world.token("c_alice");
    let none = {
        let p = edited(&alice.key, &good(), |h, _| h["alg"] = json!("none"), false);
        format!("{}.", p.rsplit_once('.').unwrap().0)
    };
    let cases: Vec<(&str, String, Vec<String>, &str)> = vec![
        ("no proof", dpop.clone(), vec![], "dpop-proof-missing"),
        (
            "two proofs",
            dpop.clone(),
            vec![good(), good()],
            "dpop-proof-multiple",
        ),
        (
            "another method",
            dpop.clone(),
            vec![alice.proof("GET", &url)],
            "dpop-proof-method",
        ),
        (
            "another URL",
            dpop.clone(),
            vec![alice.proof("POST", &world.relay.url("/service/v1/orders/x"))],
            "dpop-proof-url",
        ),
        (
            "another host",
            dpop.clone(),
            vec![alice.proof("POST", &url.replace("127.0.0.1", "localhost"))],
            "dpop-proof-url",
        ),
        (
            "too old",
            dpop.clone(),
            vec![
                alice
                    .key
                    .proof_at("POST", &url, Some(&alice.token), now - 600)
                    .unwrap(),
            ],
            "dpop-proof-expired",
        ),
        (
            "from the future",
            dpop.clone(),
            vec![
                alice
                    .key
                    .proof_at("POST", &url, Some(&alice.token), now + 600)
                    .unwrap(),
            ],
            "dpop-proof-future",
        ),
        (
            "replayed",
            dpop.clone(),
            vec![used.clone()],
            "dpop-proof-replayed",
        ),
        ("alg none", dpop.clone(), vec![none], "dpop-proof-algorithm"),
        (
            "HS256",
            dpop.clone(),
            vec![edited(
                &alice.key,
                &good(),
                |h, _| h["alg"] = json!("HS256"),
                false,
            )],
            "dpop-proof-algorithm",
        ),
        (
            "private key in the header",
            dpop.clone(),
            vec![edited(
                &alice.key,
                &good(),
                |h, _| h["jwk"]["d"] = json!("c2VjcmV0"),
                true,
            )],
            "dpop-proof-private-key",
        ),
        (
            "jku header",
            dpop.clone(),
            vec![edited(
                &alice.key,
                &good(),
                |h, _| h["jku"] = json!("https://evil.example/jwks"),
                true,
            )],
            "dpop-proof-header",
        ),
        (
            "typ JWT",
            dpop.clone(),
            vec![edited(
                &alice.key,
                &good(),
                |h, _| h["typ"] = json!("JWT"),
                true,
            )],
            "dpop-proof-type",
        ),
        (
            "signature of other claims",
            dpop.clone(),
            vec![edited(
                &alice.key,
                &good(),
                |_, c| c["htm"] = json!("GET"),
                false,
            )],
            "dpop-proof-signature",
        ),
        (
            "ath of another access token",
            dpop.clone(),
            vec![edited(
                &alice.key,
                &good(),
                |_, c| c["ath"] = json!(access_token_hash(&unbound)),
                true,
            )],
            "dpop-proof-ath",
        ),
        (
            "no ath",
            dpop.clone(),
            vec![alice.key.proof("POST", &url, None).unwrap()],
            "dpop-proof-ath",
        ),
        (
            "a key other than cnf.jkt",
            dpop.clone(),
            vec![other_key.proof("POST", &url, Some(&alice.token)).unwrap()],
            "dpop-key-mismatch",
        ),
        (
            "a bound token as Bearer",
            format!("Bearer {}", alice.token),
            vec![good()],
            "dpop-bound-token-as-bearer",
        ),
        (
            "an unbound token as DPoP",
            format!("DPoP {unbound}"),
            vec![other_key.proof("POST", &url, Some(&unbound)).unwrap()],
            "dpop-token-unbound",
        ),
        (
            "not a JWT",
            dpop.clone(),
            vec!["not-a-proof".into()],
            "dpop-proof-malformed",
        ),
    ];
    for (case, authorization, proofs, slug) in cases {
        let answer = send(
            &world,
            "POST",
            &url,
            Some(body.clone()),
            Some(&authorization),
            &proofs,
        )
        .await;
        assert_eq!(
            (answer.status, problem_type(&answer.body)),
            (401, slug),
            "{case}: {:?}",
            answer.body
        );
        assert!(
            answer.challenge.contains("DPoP realm=\"ctr\""),
            "{case}: {}",
            answer.challenge
        );
        let code = if slug.starts_with("dpop-proof") || slug == "dpop-key-mismatch" {
            "invalid_dpop_proof"
        } else {
            "invalid_token"
        };
        assert!(
            answer.challenge.contains(&format!("error=\"{code}\"")),
            "{case}: {}",
            answer.challenge
        );
        assert!(
            answer
                .challenge
                .contains("algs=\"ES256 ES384 EdDSA PS256 RS256\""),
            "{case}: {}",
            answer.challenge
        );
        assert!(
            !answer.raw.contains(&alice.token) && !answer.raw.contains(&unbound),
            "{case}: the access token echoed"
        );
        for proof in &proofs {
            assert!(
                !answer.raw.contains(proof.as_str()),
                "{case}: the proof echoed"
            );
        }
    }
    assert_eq!(world.customer_rows().await, before, "nothing written");
    // A domain refuses the same way.
    let points = world.points.running.url("/service/v1/points/confirmations");
    let replayed = alice.proof("POST", &points);
    let body = json!({"order_processing_id": first.body["order_processing_id"], "points": 10, "currency": "EUR"});
    let ok = send(
        &world,
        "POST",
        &points,
        Some(body.clone()),
        Some(&dpop),
        std::slice::from_ref(&replayed),
    )
    .await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    let again = send(
        &world,
        "POST",
        &points,
        Some(body),
        Some(&dpop),
        &[replayed],
    )
    .await;
    assert_eq!(
        (again.status, problem_type(&again.body)),
        (401, "dpop-proof-replayed")
    );
    // With no credentials at all, both schemes are offered.
    let bare = send(
        &world,
        "POST",
        &url,
        Some(json!({"total": eur(1)})),
        None,
        &[],
    )
    .await;
    assert_eq!(bare.status, 401);
    assert!(
        bare.challenge
            .starts_with("Bearer realm=\"ctr\", DPoP realm=\"ctr\""),
        "{}",
        bare.challenge
    );
}

#[tokio::test]
async fn a_deployment_that_refuses_bearer_tokens_needs_a_proof_for_everything() {
    let world = World::start_tuned(
        ctr_system_tests::domain_settings(),
        |_| {},
        |server| server.access.auth_allow_bearer = false,
    )
    .await;
    let url = world.relay.url("/service/v1/orders");
    let (status, body) = world
        .post_with(
            Some(&world.token("c_alice")),
            url.clone(),
            json!({"total": eur(4999)}),
        )
        .await;
    assert_eq!(
        (status, problem_type(&body)),
        (401, "bearer-token-refused"),
        "{body}"
    );
    let bare = send(
        &world,
        "POST",
        &url,
        Some(json!({"total": eur(1)})),
        None,
        &[],
    )
    .await;
    assert!(
        bare.challenge.starts_with("DPoP realm=\"ctr\""),
        "{}",
        bare.challenge
    );
    // Bound customers check out as before.
    let alice = Holder::new(&world, "c_alice");
    let (order, tokens) = order_with_tokens(&world, &alice).await;
    let done = alice
        .post(
            &world,
            &checkout_url(&world, &order),
            json!({"tokens": tokens}),
        )
        .await;
    assert_eq!(done.status, 200, "{:?}", done.body);
}

#[tokio::test]
async fn the_dev_issuer_binds_a_token_to_the_key_its_client_proves() {
    let world = World::start().await;
    let endpoint = format!("{}/token", world.issuer.issuer.url());
    let key = ProofKey::generate(Algorithm::ES384).unwrap();
    let token = ctr_access::client_credentials(
        &world.anonymous(),
        &endpoint,
        "c_alice",
        "demo-secret",
        None,
        Some(&key),
    )
    .await
    .unwrap();
    assert_eq!(jws_part(&token, 1)["cnf"]["jkt"], key.thumbprint());
    let holder = Holder { token, key };
    let answer = holder
        .post(
            &world,
            &world.relay.url("/service/v1/orders"),
            json!({"total": eur(100)}),
        )
        .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    // A proof for another URL, and a replayed proof, are refused at the token endpoint.
    let form = "grant_type=client_credentials";
    for proof in [
        holder
            .key
            .proof("POST", "https://elsewhere.example/token", None)
            .unwrap(),
        "not-a-proof".to_owned(),
    ] {
        let response = world
            .anonymous()
            .post(&endpoint)
            .basic_auth("c_alice", Some("demo-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("dpop", proof)
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_dpop_proof", "{body}");
    }
    let proof = holder.key.proof("POST", &endpoint, None).unwrap();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let response = world
            .anonymous()
            .post(&endpoint)
            .basic_auth("c_alice", Some("demo-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("dpop", &proof)
            .body(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        answers.push((status, body["token_type"].clone(), body["error"].clone()));
    }
    assert_eq!(answers[0], (200, json!("DPoP"), Value::Null));
    assert_eq!(answers[1], (400, Value::Null, json!("invalid_dpop_proof")));
}

/// Runs tests/oidc/dpop_client.py (Authlib's JOSE) with `args`; its stdout. `None` when no
/// interpreter is configured outside CI (under CI it must run).
fn authlib(args: &[&str]) -> Option<String> {
    let python = ctr_system_tests::authlib_python("the Authlib DPoP interop test")?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../oidc/dpop_client.py");
    let output = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "dpop_client.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).unwrap().trim().to_owned())
}

#[tokio::test]
async fn proofs_made_by_authlib_are_accepted_and_ours_verify_with_authlib() {
    let Some(made) = authlib(&["keygen", "--crv", "P-256"]) else {
        return;
    };
    let world = World::start().await;
    for (curve, made) in [("P-256", Some(made)), ("P-384", None)] {
        let made: Value = match made {
            Some(made) => serde_json::from_str(&made).unwrap(),
            None => serde_json::from_str(&authlib(&["keygen", "--crv", curve]).unwrap()).unwrap(),
        };
        let jwk = made["jwk"].to_string();
        let jkt = made["jkt"].as_str().unwrap();
        // Authlib's RFC 7638 thumbprint is ours.
        let mut public = made["jwk"].clone();
        public.as_object_mut().unwrap().remove("d");
        let public: jsonwebtoken::jwk::Jwk = serde_json::from_value(public).unwrap();
        assert_eq!(
            ctr_access::dpop::thumbprint(&public).unwrap(),
            jkt,
            "{curve}"
        );

        let token = world.issuer.issuer.mint_bound(
            "c_alice",
            &ctr_service_kit::scopes::ALL,
            Duration::from_secs(600),
            Some(jkt),
        );
        let ath = access_token_hash(&token);
        let authorization = format!("DPoP {token}");
        let prove = |htm: &str, htu: &str| {
            authlib(&[
                "proof", "--jwk", &jwk, "--htm", htm, "--htu", htu, "--ath", &ath,
            ])
            .unwrap()
        };
        let orders = world.relay.url("/service/v1/orders");
        let proof = prove("POST", &orders);
        let opened = send(
            &world,
            "POST",
            &orders,
            Some(json!({"total": eur(4999)})),
            Some(&authorization),
            std::slice::from_ref(&proof),
        )
        .await;
        assert_eq!(opened.status, 201, "{curve}: {:?}", opened.body);
        let replayed = send(
            &world,
            "POST",
            &orders,
            Some(json!({"total": eur(4999)})),
            Some(&authorization),
            &[proof],
        )
        .await;
        assert_eq!(
            (replayed.status, problem_type(&replayed.body)),
            (401, "dpop-proof-replayed")
        );
        let wrong_method = send(
            &world,
            "POST",
            &orders,
            Some(json!({"total": eur(4999)})),
            Some(&authorization),
            &[prove("GET", &orders)],
        )
        .await;
        assert_eq!(
            (wrong_method.status, problem_type(&wrong_method.body)),
            (401, "dpop-proof-method")
        );
        let order = opened.body["order_processing_id"].as_str().unwrap();
        let points = world.points.running.url("/service/v1/points/confirmations");
        let confirmed = send(
            &world,
            "POST",
            &points,
            Some(json!({"order_processing_id": order, "points": 10, "currency": "EUR"})),
            Some(&authorization),
            &[prove("POST", &points)],
        )
        .await;
        assert_eq!(confirmed.status, 201, "{curve}: {:?}", confirmed.body);
        assert_eq!(
            jws_part(confirmed.body["token"].as_str().unwrap(), 1)["cnf"]["jkt"],
            jkt
        );
        let shown_url = world.relay.url(&format!("/service/v1/orders/{order}"));
        let shown = send(
            &world,
            "GET",
            &shown_url,
            None,
            Some(&authorization),
            &[prove("GET", &shown_url)],
        )
        .await;
        assert_eq!(shown.status, 200, "{curve}: {:?}", shown.body);
    }
    // And Authlib verifies the proofs ctr's clients make, with the same thumbprint.
    for alg in [Algorithm::ES256, Algorithm::ES384] {
        let key = ProofKey::generate(alg).unwrap();
        let proof = key
            .proof(
                "POST",
                "https://localhost:8443/service/v1/orders",
                Some("at"),
            )
            .unwrap();
        let checked: Value =
            serde_json::from_str(&authlib(&["verify", "--proof", &proof]).unwrap()).unwrap();
        assert_eq!(checked["jkt"], key.thumbprint());
        assert_eq!(
            checked["claims"]["htu"],
            "https://localhost:8443/service/v1/orders"
        );
        assert_eq!(checked["claims"]["ath"], access_token_hash("at"));
        assert_eq!(checked["header"]["typ"], "dpop+jwt");
    }
}
