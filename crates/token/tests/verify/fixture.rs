//! One issuer world for the verifier tests: a seeded mock KMS, a fake clock, issuers for
//! `coupons` and `points`, and a verifier that knows both.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ctr_domain_kit::{IssuerConfig, TokenIssuer};
use ctr_kms::{Kms, MockKms};
use ctr_money::{Currency, Money};
use ctr_token::{
    FakeClock, KeySet, Settlement, StaticKeys, VerifiedToken, Verifier, VerifierPolicy, VerifyError,
};
use serde_json::{Value, json};

pub const NOW: i64 = 1_800_000_000;
pub const ORDER: &str = "op_0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e";
pub const JTI: &str = "0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e";

pub struct Fixture {
    pub clock: Arc<FakeClock>,
    pub coupons: TokenIssuer,
    pub points: TokenIssuer,
    pub verifier: Verifier<StaticKeys>,
}

pub fn issuer(
    kms: Arc<dyn Kms>,
    iss: &str,
    capability: &str,
    clock: Arc<FakeClock>,
) -> TokenIssuer {
    let config = IssuerConfig {
        iss: iss.into(),
        audience: "order-processing".into(),
        key_id: format!("{iss}-signing"),
        capabilities: vec![capability.into()],
        ttl: Duration::from_secs(120),
    };
    TokenIssuer::new(kms, config, clock).unwrap()
}

pub fn policy() -> VerifierPolicy {
    VerifierPolicy::new("order-processing")
        .issuer("coupons", &["coupons:redeem"])
        .issuer("points", &["points:redeem"])
}

impl Fixture {
    pub async fn new() -> Self {
        let kms: Arc<dyn Kms> = Arc::new(MockKms::from_seed(b"ctr verifier tests"));
        kms.create_key("coupons-signing").await.unwrap();
        kms.create_key("points-signing").await.unwrap();
        let clock = Arc::new(FakeClock::at_secs(NOW));
        let coupons = issuer(kms.clone(), "coupons", "coupons:redeem", clock.clone());
        let points = issuer(kms, "points", "points:redeem", clock.clone());
        let keys = StaticKeys::default()
            .with(
                "coupons",
                KeySet::from_jwks(&coupons.jwks().await.unwrap()).unwrap(),
            )
            .with(
                "points",
                KeySet::from_jwks(&points.jwks().await.unwrap()).unwrap(),
            );
        let verifier = Verifier::new(policy(), keys, clock.clone());
        Self {
            clock,
            coupons,
            points,
            verifier,
        }
    }

    pub async fn kid(&self) -> String {
        self.coupons
            .kms()
            .primary_version("coupons-signing")
            .await
            .unwrap()
            .to_string()
    }

    pub async fn header(&self) -> Value {
        json!({"alg": "ES384", "typ": "cap+jwt", "kid": self.kid().await})
    }

    /// Valid claims, as `coupons` would issue them.
    pub fn claims(&self) -> Value {
        json!({
            "iss": "coupons", "aud": "order-processing", "sub": "c_alice",
            "iat": NOW, "nbf": NOW, "exp": NOW + 120, "jti": JTI,
            "order_processing_id": ORDER, "capabilities": ["coupons:redeem"],
            "settles": {"amount": 500, "currency": "EUR"},
            "priced_on": {"amount": 4999, "currency": "EUR"},
            "constraints": {"coupon": "SPRING10"}
        })
    }

    /// Signs exactly these header and payload bytes with the coupons key.
    pub async fn sign_bytes(&self, header: &[u8], payload: &[u8]) -> String {
        let version = self
            .coupons
            .kms()
            .primary_version("coupons-signing")
            .await
            .unwrap();
        self.coupons
            .sign_raw(&version, header, payload)
            .await
            .unwrap()
    }

    pub async fn sign(&self, header: &Value, claims: &Value) -> String {
        self.sign_bytes(
            &serde_json::to_vec(header).unwrap(),
            &serde_json::to_vec(claims).unwrap(),
        )
        .await
    }

    pub async fn valid(&self) -> String {
        self.sign(&self.header().await, &self.claims()).await
    }

    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        self.verifier.verify(token, ORDER).await
    }
}

/// What the tokens of these tests settle: 5.00 EUR.
pub fn settlement() -> Settlement {
    Settlement::pays(Money::checked(500, Currency::parse("EUR").unwrap()).unwrap())
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Replaces the segment `index` of a compact token.
pub fn with_segment(token: &str, index: usize, segment: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[index] = segment;
    parts.join(".")
}
