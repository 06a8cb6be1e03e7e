//! Token issue and verify against the raw aws-lc-rs ES384 baseline, in the same run.
//!
//! `cargo bench -p ctr-token --bench token`
//!
//! After the criterion groups, an interleaved measurement prints each operation as a ratio of
//! the raw crypto rate it is bounded by (verify / raw verify, issue / raw sign).

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_FIXED, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use criterion::{Criterion, criterion_group};
use ctr_domain_kit::{IssuedToken, IssuerConfig, TokenIssuer};
use ctr_kms::{Kms, MockKms};
use ctr_money::{Currency, Money};
use ctr_token::{FakeClock, KeySet, Settlement, StaticKeys, Verifier, VerifierPolicy};
use tokio::runtime::Runtime;

const NOW: i64 = 1_800_000_000;
const ORDER: &str = "op_bench";

struct World {
    rt: Runtime,
    issuer: TokenIssuer,
    verifier: Verifier<StaticKeys>,
    token: IssuedToken,
    keys: KeySet,
    kid: String,
    raw_key: EcdsaKeyPair,
    raw_message: Vec<u8>,
    raw_signature: Vec<u8>,
}

fn settlement() -> Settlement {
    Settlement::pays(Money::checked(500, Currency::parse("EUR").unwrap()).unwrap())
}

fn world() -> World {
    let rt = Runtime::new().unwrap();
    let (issuer, keys, token) = rt.block_on(async {
        let kms: Arc<dyn Kms> = Arc::new(MockKms::from_seed(b"bench"));
        kms.create_key("coupons-signing").await.unwrap();
        let config = IssuerConfig {
            iss: "coupons".into(),
            audience: "order-processing".into(),
            key_id: "coupons-signing".into(),
            capabilities: vec!["coupons:redeem".into()],
            ttl: Duration::from_secs(120),
        };
        let issuer = TokenIssuer::new(kms, config, Arc::new(FakeClock::at_secs(NOW))).unwrap();
        let keys = KeySet::from_jwks(&issuer.jwks().await.unwrap()).unwrap();
        let token = issuer
            .issue(
                "c_alice",
                ORDER,
                settlement(),
                &serde_json::json!({"coupon": "SPRING10"}),
            )
            .await
            .unwrap();
        (issuer, keys, token)
    });
    let kid = token.kid.clone();
    let policy = VerifierPolicy::new("order-processing").issuer("coupons", &["coupons:redeem"]);
    let static_keys = StaticKeys::default().with("coupons", keys.clone());
    let verifier = Verifier::new(policy, static_keys, Arc::new(FakeClock::at_secs(NOW)));

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
    let raw_key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    // The same signing input length as a real token, so hashing costs the same.
    let raw_message = token.token.rsplit_once('.').unwrap().0.as_bytes().to_vec();
    let raw_signature = raw_key.sign(&rng, &raw_message).unwrap().as_ref().to_vec();
    World {
        rt,
        issuer,
        verifier,
        token,
        keys,
        kid,
        raw_key,
        raw_message,
        raw_signature,
    }
}

impl World {
    fn raw_verify(&self) {
        let public =
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, self.raw_key.public_key().as_ref());
        public
            .verify(black_box(&self.raw_message), black_box(&self.raw_signature))
            .unwrap();
    }

    fn raw_sign(&self) {
        black_box(
            self.raw_key
                .sign(&SystemRandom::new(), black_box(&self.raw_message))
                .unwrap(),
        );
    }

    fn verify(&self) {
        black_box(
            self.rt
                .block_on(self.verifier.verify(black_box(&self.token.token), ORDER))
                .unwrap(),
        );
    }

    fn issue(&self) {
        black_box(
            self.rt
                .block_on(self.issuer.issue(
                    "c_alice",
                    ORDER,
                    settlement(),
                    &serde_json::json!({"coupon": "SPRING10"}),
                ))
                .unwrap(),
        );
    }
}

fn benches(c: &mut Criterion) {
    let w = world();
    let mut group = c.benchmark_group("es384");
    group.bench_function("raw_aws_lc_verify", |b| b.iter(|| w.raw_verify()));
    group.bench_function("token_verify", |b| b.iter(|| w.verify()));
    group.bench_function("raw_aws_lc_sign", |b| b.iter(|| w.raw_sign()));
    group.bench_function("token_issue_mock_kms", |b| b.iter(|| w.issue()));
    group.bench_function("jwks_lookup", |b| {
        b.iter(|| black_box(w.keys.get(black_box(&w.kid))))
    });
    group.finish();
}

/// Operations per second of `f`, over `rounds` interleaved slices of `slice`.
fn rate(f: impl Fn(), slice: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < slice {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn ratios() {
    let w = world();
    let slice = Duration::from_millis(300);
    let (mut raw_v, mut tok_v, mut raw_s, mut tok_i) = (0.0, 0.0, 0.0, 0.0);
    for _ in 0..5 {
        raw_v += rate(|| w.raw_verify(), slice);
        tok_v += rate(|| w.verify(), slice);
        raw_s += rate(|| w.raw_sign(), slice);
        tok_i += rate(|| w.issue(), slice);
    }
    println!("\nratios (interleaved, 5 x 300 ms each):");
    println!(
        "  token verify / raw aws-lc verify = {:.3}  ({:.0} / {:.0} per s)",
        tok_v / raw_v,
        tok_v / 5.0,
        raw_v / 5.0
    );
    println!(
        "  token issue (mock KMS) / raw aws-lc sign = {:.3}  ({:.0} / {:.0} per s)",
        tok_i / raw_s,
        tok_i / 5.0,
        raw_s / 5.0
    );
}

criterion_group!(token, benches);

fn main() {
    token();
    Criterion::default().configure_from_args().final_summary();
    ratios();
}
