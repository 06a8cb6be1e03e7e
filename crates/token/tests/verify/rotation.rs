//! Key rotation and the key-set cache as the verifier sees them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use ctr_domain_kit::TokenIssuer;
use ctr_kms::{Kms, MockKms};
use ctr_token::{CachePolicy, FakeClock, JwkSet, JwksFetcher, KeySetCache, Verifier};
use std::collections::HashMap;

use crate::fixture::{NOW, ORDER, issuer, policy, settlement};

/// Fetches the issuer's JWKS straight from its KMS, counting fetches.
struct KmsFetcher {
    issuer: TokenIssuer,
    fetches: Arc<AtomicUsize>,
}

#[async_trait]
impl JwksFetcher for KmsFetcher {
    async fn fetch(&self) -> Result<JwkSet, String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.issuer.jwks().await.map_err(|e| e.to_string())
    }
}

async fn world() -> (
    TokenIssuer,
    Verifier<HashMap<String, Arc<KeySetCache>>>,
    Arc<AtomicUsize>,
    Arc<FakeClock>,
) {
    let kms: Arc<dyn Kms> = Arc::new(MockKms::from_seed(b"rotation"));
    kms.create_key("coupons-signing").await.unwrap();
    let clock = Arc::new(FakeClock::at_secs(NOW));
    let coupons = issuer(kms, "coupons", "coupons:redeem", clock.clone());
    let fetches = Arc::new(AtomicUsize::new(0));
    let fetcher = KmsFetcher {
        issuer: coupons.clone(),
        fetches: fetches.clone(),
    };
    let cache = Arc::new(KeySetCache::new(
        fetcher,
        CachePolicy::default(),
        clock.clone(),
    ));
    let keys = HashMap::from([("coupons".to_owned(), cache)]);
    (
        coupons,
        Verifier::new(policy(), keys, clock.clone()),
        fetches,
        clock,
    )
}

#[tokio::test]
async fn tokens_of_the_old_and_the_new_key_version_verify_while_both_are_published() {
    let (coupons, verifier, fetches, clock) = world().await;
    let v1 = coupons
        .issue("c_alice", ORDER, settlement(), &serde_json::json!({}))
        .await
        .unwrap();
    verifier
        .verify(&v1.token, ORDER)
        .await
        .expect("v1 verifies before rotation");

    coupons.kms().rotate("coupons-signing").await.unwrap();
    clock.advance(CachePolicy::default().min_refetch_interval);
    let v2 = coupons
        .issue("c_alice", ORDER, settlement(), &serde_json::json!({}))
        .await
        .unwrap();
    assert_ne!(v1.kid, v2.kid, "the rotated key signs");
    verifier
        .verify(&v2.token, ORDER)
        .await
        .expect("v2 verifies after the unknown kid triggers a refetch");
    verifier
        .verify(&v1.token, ORDER)
        .await
        .expect("v1 still verifies while published");
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "one initial fetch and one refetch for the new kid"
    );

    coupons
        .kms()
        .disable_version("coupons-signing", &ctr_kms::KeyVersion::new(v1.kid.clone()))
        .await
        .unwrap();
    clock.advance(CachePolicy::default().max_age);
    let refused = verifier.verify(&v1.token, ORDER).await.unwrap_err();
    assert_eq!(
        refused.problem_type(),
        "token-key-unknown",
        "v1 is refused once it is no longer published"
    );
}

#[tokio::test]
async fn an_unknown_kid_is_refetched_once_and_then_refused() {
    let (coupons, verifier, fetches, _clock) = world().await;
    let token = coupons
        .issue("c_alice", ORDER, settlement(), &serde_json::json!({}))
        .await
        .unwrap();
    verifier.verify(&token.token, ORDER).await.unwrap();
    coupons.kms().rotate("coupons-signing").await.unwrap();
    let newer = coupons
        .issue("c_alice", ORDER, settlement(), &serde_json::json!({}))
        .await
        .unwrap();
    // Within the rate limit: no refetch, the kid stays unknown.
    for _ in 0..10 {
        let refused = verifier.verify(&newer.token, ORDER).await.unwrap_err();
        assert_eq!(refused.problem_type(), "token-key-unknown");
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "an unknown kid refetches at most once per interval"
    );
}

#[tokio::test]
async fn no_secret_bearing_type_prints_its_secret() {
    let seed = "a seed nobody may read";
    let config: ctr_kms::KmsConfig =
        serde_json::from_value(serde_json::json!({"backend": "mock", "seed": seed})).unwrap();
    let kms = config.build().await.unwrap();
    kms.create_key("coupons-signing").await.unwrap();
    let issuer = issuer(
        kms.clone(),
        "coupons",
        "coupons:redeem",
        Arc::new(FakeClock::at_secs(NOW)),
    );
    let issued = issuer
        .issue("c_alice", ORDER, settlement(), &serde_json::json!({}))
        .await
        .unwrap();
    let keys = ctr_token::StaticKeys::default().with(
        "coupons",
        ctr_token::KeySet::from_jwks(&issuer.jwks().await.unwrap()).unwrap(),
    );
    let verifier = Verifier::new(policy(), keys, Arc::new(FakeClock::at_secs(NOW)));
    let verified = verifier.verify(&issued.token, ORDER).await.unwrap();
    let seed_bytes = format!("{:?}", seed.as_bytes());
    let signature = issued.token.rsplit('.').next().unwrap().to_owned();
    for (name, printed) in [
        ("KmsConfig", format!("{config:?}")),
        ("MockKms", format!("{kms:?}")),
        ("TokenIssuer", format!("{issuer:?}")),
        ("IssuedToken", format!("{issued:?}")),
        ("VerifiedToken", format!("{verified:?}")),
    ] {
        assert!(!printed.contains(seed), "{name} prints the seed: {printed}");
        assert!(
            !printed.contains(&seed_bytes),
            "{name} prints the seed bytes: {printed}"
        );
        assert!(
            !printed.contains(&signature),
            "{name} prints the token: {printed}"
        );
    }
}
