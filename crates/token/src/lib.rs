//! Confirmed capability tokens: ES384 JWS compact tokens that a domain signs through its KMS
//! and that the relay verifies without being able to mint.
//!
//! The verify side ([`Verifier`], [`KeySetCache`]) has no access to a KMS; single use (the
//! replay store) is the relay's, in its durable store.
//! Issuing is not here: it is `ctr_domain_kit::TokenIssuer`, the issuing half, which the
//! relay does not depend on.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use ctr_money::{Currency, Money};
//! use ctr_domain_kit::{IssuerConfig, TokenIssuer};
//! use ctr_token::{KeySet, Settlement, StaticKeys, SystemClock, Verifier, VerifierPolicy};
//!
//! let kms = ctr_kms::KmsConfig::Mock { seed: None }.build().await?;
//! kms.create_key("coupons-signing").await?;
//! let clock = Arc::new(SystemClock);
//! let issuer = TokenIssuer::new(kms, IssuerConfig {
//!     iss: "coupons".into(),
//!     audience: "order-processing".into(),
//!     key_id: "coupons-signing".into(),
//!     capabilities: vec!["coupons:redeem".into()],
//!     ttl: Duration::from_secs(120),
//! }, clock.clone())?;
//! let discount = Money::checked(500, Currency::parse("EUR")?).unwrap();
//! let total = Money::checked(4999, Currency::parse("EUR")?).unwrap();
//! let settlement = Settlement { settles: discount, priced_on: Some(total) };
//! let issued = issuer
//!     .issue("c_alice", "op_1", settlement, &serde_json::json!({"coupon": "SPRING10"}))
//!     .await?;
//!
//! let keys = StaticKeys::default().with("coupons", KeySet::from_jwks(&issuer.jwks().await?)?);
//! let policy = VerifierPolicy::new("order-processing").issuer("coupons", &["coupons:redeem"]);
//! let verifier = Verifier::new(policy, keys, clock);
//! let verified = verifier.verify(&issued.token, "op_1").await?;
//! assert_eq!(verified.claims().jti, issued.jti);
//! assert_eq!(verified.claims().settlement(), settlement);
//!
//! let refused = verifier.verify(&issued.token, "op_2").await.unwrap_err();
//! assert_eq!(refused.problem_type(), "order-mismatch");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod cache;
mod claims;
mod clock;
mod compact;
mod error;
mod jwks;
mod verify;

use std::collections::HashMap;
use std::sync::Arc;

pub use cache::{CachePolicy, CacheStatus, JwksFetcher, KeySetCache};
pub use claims::{Audience, Claims, Confirmation, Constraints, Settlement};
pub use clock::{Clock, FakeClock, SystemClock, secs};
pub use compact::{ALGORITHM, MAX_TOKEN_BYTES, SIGNATURE_BYTES, TOKEN_TYPE, UnverifiedToken};
pub use error::{KeyError, VerifyError};
pub use jwks::{Jwk, JwkSet, JwksError, KeySet, VerificationKey};
pub use verify::{KeyResolver, VerifiedToken, Verifier, VerifierPolicy, sha256_hex};

/// Fixed key sets per issuer: for tests, tools and golden tokens.
#[derive(Debug, Default)]
pub struct StaticKeys(HashMap<String, KeySet>);

impl StaticKeys {
    pub fn with(mut self, iss: impl Into<String>, keys: KeySet) -> Self {
        self.0.insert(iss.into(), keys);
        self
    }
}

#[async_trait::async_trait]
impl KeyResolver for StaticKeys {
    async fn key(&self, iss: &str, kid: &str) -> Result<Arc<VerificationKey>, KeyError> {
        self.0
            .get(iss)
            .and_then(|keys| keys.get(kid))
            .ok_or(KeyError::UnknownKid)
    }
}
