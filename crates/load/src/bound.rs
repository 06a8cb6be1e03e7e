//! The crypto bound: how many flows per second this machine could complete if it did nothing
//! but the ES384 work a flow required when the benchmark began (3 signatures by the domains;
//! 6 verifications, 3 at the relay and 3 at the domains' redemption), measured with raw
//! aws-lc-rs in the same run. It stays the reference so figures compare across versions.
//! Since domains redeem by the token's hash, a flow's own ES384 work is 3 signatures and 3
//! verifications: `own_flows_per_second` is that bound.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_FIXED, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    UnparsedPublicKey,
};
use serde::Serialize;

pub const SIGNS_PER_FLOW: f64 = 3.0;
pub const VERIFIES_PER_FLOW: f64 = 6.0;
/// What a flow verifies today: the relay's 3 (a domain compares hashes).
pub const OWN_VERIFIES_PER_FLOW: f64 = 3.0;

#[derive(Debug, Clone, Serialize)]
pub struct CryptoBound {
    pub cores: usize,
    pub signs_per_second_per_core: f64,
    pub verifies_per_second_per_core: f64,
    pub flows_per_second: f64,
    /// The bound of the flow's own ES384 work (3 signatures, 3 verifications).
    pub own_flows_per_second: f64,
}

fn rate(f: impl Fn(), for_: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < for_ {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Measures single-core sign and verify rates over a token-sized message.
pub fn measure() -> Result<CryptoBound, String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
        .map_err(|e| e.to_string())?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|e| e.to_string())?;
    let message = vec![b'a'; 420];
    let signature = key.sign(&rng, &message).map_err(|e| e.to_string())?;
    let public =
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, key.public_key().as_ref().to_vec());
    let slice = Duration::from_millis(700);
    let sign = rate(
        || {
            let _ = black_box(key.sign(&rng, black_box(&message)));
        },
        slice,
    );
    let verify = rate(
        || {
            let _ = black_box(public.verify(black_box(&message), black_box(signature.as_ref())));
        },
        slice,
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let seconds_per_flow = SIGNS_PER_FLOW / sign + VERIFIES_PER_FLOW / verify;
    let own_seconds_per_flow = SIGNS_PER_FLOW / sign + OWN_VERIFIES_PER_FLOW / verify;
    Ok(CryptoBound {
        cores,
        signs_per_second_per_core: sign,
        verifies_per_second_per_core: verify,
        flows_per_second: cores as f64 / seconds_per_flow,
        own_flows_per_second: cores as f64 / own_seconds_per_flow,
    })
}
