//! The checks, in order: size, header (an accepted asymmetric `alg`, no embedded or remote key,
//! `typ: at+jwt`), the issuer's key by `kid`, then jsonwebtoken verifies the signature, `iss`,
//! `aud`, `exp` and `nbf`, and the RFC 9068 claims are read.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::keys::KeysError;
use crate::{AccessError, AccessSettings, IssuerKeys, SettingError};

/// The largest access token read (real ones are well under 2 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Header parameters that would let a token bring its own key (or fetch one): refused.
const KEY_BEARING_HEADERS: [&str; 5] = ["jku", "jwk", "x5u", "x5c", "crit"];

/// A verified access token: who the customer is and what the client may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The configured claim (`sub` by default): the customer.
    pub customer: String,
    pub client_id: String,
    pub jti: String,
    pub scopes: Vec<String>,
    pub expires_at: i64,
    /// `cnf.jkt`: the thumbprint of the key the token is bound to (DPoP), when bound.
    pub jkt: Option<String>,
}

impl Access {
    /// `Ok` when the token grants `scope`.
    pub fn require(&self, scope: &'static str) -> Result<(), AccessError> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(AccessError::InsufficientScope(scope))
        }
    }
}

/// Verifies access tokens from the configured issuer.
pub struct AccessVerifier {
    issuer: String,
    audience: String,
    customer_claim: String,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    require_at_jwt: bool,
    keys: IssuerKeys,
    verified: crate::verified::Verified,
}

impl AccessVerifier {
    /// A verifier for `settings`, fetching the issuer's metadata and keys with `http`.
    pub fn new(settings: &AccessSettings, http: reqwest::Client) -> Result<Self, SettingError> {
        settings.validate()?;
        let issuer = settings.issuer()?.to_owned();
        Ok(Self {
            keys: IssuerKeys::new(&issuer, http, settings.auth_keys_refresh),
            issuer,
            audience: settings.auth_audience.clone(),
            customer_claim: settings.auth_customer_claim.clone(),
            algorithms: settings.algorithms()?,
            leeway: settings.auth_leeway.as_secs(),
            require_at_jwt: settings.auth_require_at_jwt,
            verified: crate::verified::Verified::new(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn keys(&self) -> &IssuerKeys {
        &self.keys
    }

    /// Fetches the issuer's keys now (at start, and for readiness).
    pub async fn refresh(&self) -> Result<(), KeysError> {
        self.keys.refresh().await
    }

    /// Verifies `token` (the credentials of `Authorization: Bearer`), once: a token verified
    /// before under the issuer's current keys is answered from memory until the earlier of
    /// its `exp` and a minute (see the `verified` module).
    pub async fn verify(&self, token: &str) -> Result<Access, AccessError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AccessError::Malformed);
        }
        let digest = crate::verified::digest(token);
        let now = unix_now();
        let keys = self.keys.generation();
        if let Some(access) = self.verified.get(&digest, now, keys) {
            return Ok(access);
        }
        let access = self.verify_now(token).await?;
        self.verified.insert(digest, &access, now, keys);
        Ok(access)
    }

    /// Verifies `token` in full.
    async fn verify_now(&self, token: &str) -> Result<Access, AccessError> {
        let header = self.check_header(token)?;
        let kid = header.get("kid").and_then(Value::as_str);
        let alg = self.algorithm(&header)?;
        let key = match self.keys.key(kid).await {
            Ok(Some(key)) => key,
            Ok(None) => return Err(AccessError::UnknownKey),
            Err(error) => {
                tracing::warn!(issuer = %self.issuer, %error, "customer issuer keys unavailable");
                return Err(AccessError::IssuerUnavailable);
            }
        };
        if key.alg.is_some_and(|a| a != alg) || key.key.family() != alg.family() {
            return Err(AccessError::Algorithm(format!("{alg:?}")));
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| refusal(e.kind()))?
            .claims;
        self.access(&claims)
    }

    /// The header as JSON, checked for what must not be there and for `typ`.
    fn check_header(&self, token: &str) -> Result<Map<String, Value>, AccessError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AccessError::Malformed);
        };
        let header: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(AccessError::Malformed)?;
        if let Some(name) = KEY_BEARING_HEADERS
            .iter()
            .find(|h| header.contains_key(**h))
        {
            return Err(AccessError::HeaderKey(name));
        }
        let typ = header.get("typ").and_then(Value::as_str);
        let at_jwt = typ.is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        });
        let relaxed = typ.is_none_or(|t| t.eq_ignore_ascii_case("jwt"));
        if !(at_jwt || (!self.require_at_jwt && relaxed)) {
            return Err(AccessError::Type);
        }
        Ok(header)
    }

    fn algorithm(&self, header: &Map<String, Value>) -> Result<Algorithm, AccessError> {
        let name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(AccessError::Malformed)?;
        name.parse::<Algorithm>()
            .ok()
            .filter(|alg| self.algorithms.contains(alg))
            .ok_or_else(|| AccessError::Algorithm(name.chars().take(16).collect()))
    }

    /// The RFC 9068 claims jsonwebtoken did not check, and the customer.
    fn access(&self, claims: &Map<String, Value>) -> Result<Access, AccessError> {
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| AccessError::Claims(format!("`{name}` must be a non-empty string")))
        };
        let number = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_i64)
                .ok_or_else(|| AccessError::Claims(format!("`{name}` must be a number")))
        };
        let iat = number("iat")?;
        if iat > unix_now() + self.leeway as i64 {
            return Err(AccessError::NotYetValid);
        }
        let scopes = match claims.get("scope") {
            None => Vec::new(),
            Some(Value::String(scope)) => scope.split_whitespace().map(str::to_owned).collect(),
            Some(_) => {
                return Err(AccessError::Claims(
                    "`scope` must be a space-separated string".into(),
                ));
            }
        };
        let jkt = match claims.get("cnf") {
            None => None,
            Some(cnf) => Some(
                cnf.get("jkt")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| AccessError::Claims("`cnf` must carry `jkt`".into()))?,
            ),
        };
        Ok(Access {
            customer: text(&self.customer_claim)?,
            client_id: text("client_id")?,
            jti: text("jti")?,
            expires_at: number("exp")?,
            scopes,
            jkt,
        })
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn refusal(kind: &ErrorKind) -> AccessError {
    match kind {
        ErrorKind::InvalidSignature => AccessError::Signature,
        ErrorKind::ExpiredSignature => AccessError::Expired,
        ErrorKind::ImmatureSignature => AccessError::NotYetValid,
        ErrorKind::InvalidIssuer => AccessError::Issuer,
        ErrorKind::InvalidAudience => AccessError::Audience,
        ErrorKind::MissingRequiredClaim(claim) => {
            AccessError::Claims(format!("`{claim}` is missing"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            AccessError::Claims(format!("`{claim}` has the wrong type"))
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AccessError::Algorithm("?".into())
        }
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AccessError::Signature,
        _ => AccessError::Malformed,
    }
}
