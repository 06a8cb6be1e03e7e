//! Signing latency and throughput through each KMS backend against the mock, in one run:
//!
//!   eval "$(tests/kms/setup.sh)"; export SOFTHSM2_CONF=$(tests/kms/softhsm.sh)
//!   AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
//!     cargo run --release -p ctr-kms --example sign_latency -- 2000
//!
//! For each backend: the p50 and p99 of one signature at a time, then signatures per second
//! with 16 in flight, over a token-sized message. OpenBao (dev mode) and moto (AWS KMS
//! emulated in Python) run on this machine over TLS on loopback, so their figures are a floor
//! for a network KMS and say what the client side costs; SoftHSM2 is a library in process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ctr_kms::testing::{Moto, OpenBao};
use ctr_kms::{Kms, KmsConfig};

/// A token's signing input (`header.claims`, base64url), the size the domains sign.
fn signing_input() -> Vec<u8> {
    use base64::Engine as _;
    let part = |json: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
    };
    format!(
        "{}.{}",
        part(serde_json::json!({"alg": "ES384", "kid": "coupons-signing.v1", "typ": "cap+jwt"})),
        part(serde_json::json!({
            "iss": "coupons", "aud": "order-processing", "sub": "c_alice",
            "iat": 1796000000, "nbf": 1796000000, "exp": 1796000120,
            "jti": "0192f0c4-7f3a-7b11-9d55-0c2a3b4c5d6e", "order_processing_id": "op_0192f0c4",
            "capabilities": ["coupons:redeem"], "settles": {"amount": 500, "currency": "EUR"},
            "constraints": {"coupon": "SPRING10"}
        }))
    )
    .into_bytes()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let message = Arc::new(signing_input());
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut backends: Vec<(&str, Arc<dyn Kms>)> =
        vec![("mock", KmsConfig::Mock { seed: None }.build().await?)];
    let bao = OpenBao::start().await;
    if let Some(bao) = &bao {
        backends.push(("openbao", KmsConfig::Vault(bao.settings()).build().await?));
    }
    let moto = Moto::start().await;
    if let Some(moto) = &moto {
        backends.push(("aws/moto", KmsConfig::Aws(moto.settings()).build().await?));
    }
    if let Some(token) = ctr_kms::testing::softhsm() {
        backends.push(("softhsm2", KmsConfig::Pkcs11(token).build().await?));
    }
    println!(
        "{:<10} {:>9} {:>9} {:>12}",
        "backend", "p50 ms", "p99 ms", "signs/s @16"
    );
    let mut mock_rate = None;
    for (name, kms) in backends {
        let version = kms.create_key("bench-signing").await?;
        let mut latencies = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            kms.sign("bench-signing", &version, &message).await?;
            latencies.push(started.elapsed());
        }
        latencies.sort();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        let started = Instant::now();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (kms, version, message) = (kms.clone(), version.clone(), message.clone());
                tokio::spawn(async move {
                    for _ in 0..n / 16 {
                        kms.sign("bench-signing", &version, &message).await?;
                    }
                    Ok::<_, ctr_kms::KmsError>(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        let rate = (n / 16 * 16) as f64 / started.elapsed().as_secs_f64();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let relative = match mock_rate {
            None => {
                mock_rate = Some(rate);
                String::new()
            }
            Some(mock) => format!("  ({:.3} of the mock)", rate / mock),
        };
        println!(
            "{name:<10} {:>9.3} {:>9.3} {:>12.0}{relative}",
            ms(at(0.50)),
            ms(at(0.99)),
            rate
        );
    }
    Ok(())
}
