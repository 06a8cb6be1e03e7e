//! The issuer settings, flattened into every service's configuration (`CTR_AUTH_*`).

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::{Deserialize, Deserializer, Serialize};

use crate::dpop::ProofVerifier;

/// The algorithms accepted unless `CTR_AUTH_ALGORITHMS` says otherwise: asymmetric ones only.
pub const DEFAULT_ALGORITHMS: &str = "RS256,PS256,ES256,ES384,EdDSA";

/// The algorithms a DPoP proof may use unless `CTR_AUTH_DPOP_ALGORITHMS` says otherwise.
pub const DEFAULT_DPOP_ALGORITHMS: &str = "ES256,ES384,EdDSA,PS256,RS256";

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AccessSettings {
    /// `CTR_AUTH_ISSUER`: the issuer URL customers' access tokens come from, exactly as its
    /// tokens' `iss` and its metadata's `issuer` spell it (`https://...`). Its metadata is
    /// read from `/.well-known/openid-configuration`, else RFC 8414's
    /// `/.well-known/oauth-authorization-server`.
    #[serde(deserialize_with = "empty_as_none")]
    pub auth_issuer: Option<String>,
    /// `CTR_AUTH_AUDIENCE`: the `aud` an access token must name for this API.
    pub auth_audience: String,
    /// `CTR_AUTH_CUSTOMER_CLAIM`: the claim that names the customer (`sub` by default).
    pub auth_customer_claim: String,
    /// `CTR_AUTH_ALGORITHMS`: the signature algorithms accepted, comma-separated; asymmetric
    /// only (`none` and HMAC are refused at start).
    pub auth_algorithms: String,
    /// `CTR_AUTH_LEEWAY`: clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub auth_leeway: Duration,
    /// `CTR_AUTH_CA_FILE`: a PEM bundle the issuer's certificate is verified against (a
    /// private issuer); unset, the public web roots.
    #[serde(deserialize_with = "empty_as_none")]
    pub auth_ca_file: Option<PathBuf>,
    /// `CTR_AUTH_REQUIRE_AT_JWT`: whether the header must say `typ: at+jwt` (RFC 9068); turn
    /// off only for an issuer that sends `JWT` or nothing.
    pub auth_require_at_jwt: bool,
    /// `CTR_AUTH_KEYS_REFRESH`: the shortest time between two fetches of the issuer's keys
    /// (a token with an unknown `kid` triggers one).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub auth_keys_refresh: Duration,
    /// `CTR_AUTH_ALLOW_BEARER`: whether access tokens that are not DPoP-bound (no `cnf.jkt`)
    /// are accepted as bearer tokens, and capability tokens without `cnf` checked out. With
    /// `false`, every customer request proves its key (RFC 9449).
    pub auth_allow_bearer: bool,
    /// `CTR_AUTH_DPOP_ALGORITHMS`: the algorithms a DPoP proof may be signed with,
    /// comma-separated; asymmetric only.
    pub auth_dpop_algorithms: String,
    /// `CTR_AUTH_DPOP_MAX_AGE`: how old (by its `iat`) a DPoP proof may be; its `jti` is
    /// remembered that long (plus the skew) in the store every replica shares.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub auth_dpop_max_age: Duration,
    /// `CTR_AUTH_DPOP_SKEW`: how far a proof's `iat` may lie in the future (clock skew).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub auth_dpop_skew: Duration,
    /// `CTR_AUTH_DPOP_ORIGINS`: the public origins (`https://shop.example`) a proof's `htu`
    /// may name, comma-separated, when clients reach the service through a name or port it
    /// cannot see (a proxy, an ingress); unset, `htu` must name the request's `Host`.
    #[serde(deserialize_with = "empty_as_none")]
    pub auth_dpop_origins: Option<String>,
}

impl Default for AccessSettings {
    fn default() -> Self {
        Self {
            auth_issuer: None,
            auth_audience: "ctr".into(),
            auth_customer_claim: "sub".into(),
            auth_algorithms: DEFAULT_ALGORITHMS.into(),
            auth_leeway: Duration::from_secs(30),
            auth_ca_file: None,
            auth_require_at_jwt: true,
            auth_keys_refresh: Duration::from_secs(10),
            auth_allow_bearer: true,
            auth_dpop_algorithms: DEFAULT_DPOP_ALGORITHMS.into(),
            auth_dpop_max_age: Duration::from_secs(60),
            auth_dpop_skew: Duration::from_secs(5),
            auth_dpop_origins: None,
        }
    }
}

/// A setting that cannot be used, named.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct SettingError {
    pub setting: &'static str,
    pub reason: String,
}

impl AccessSettings {
    /// The issuer URL, which a service with customer endpoints cannot start without.
    pub fn issuer(&self) -> Result<&str, SettingError> {
        let issuer = self.auth_issuer.as_deref().ok_or_else(|| SettingError {
            setting: "CTR_AUTH_ISSUER",
            reason: "set the URL of the OAuth 2.0 / OpenID Connect issuer whose access tokens \
                     identify customers (the compose stack uses its development issuer)"
                .into(),
        })?;
        match reqwest::Url::parse(issuer) {
            Ok(url)
                if url.scheme() == "https" && url.query().is_none() && url.fragment().is_none() =>
            {
                Ok(issuer)
            }
            _ => Err(SettingError {
                setting: "CTR_AUTH_ISSUER",
                reason: format!("`{issuer}` is not an https URL without query or fragment"),
            }),
        }
    }

    /// The accepted algorithms, parsed; refuses `none`, HMAC and unknown names.
    pub fn algorithms(&self) -> Result<Vec<Algorithm>, SettingError> {
        parse_algorithms("CTR_AUTH_ALGORITHMS", &self.auth_algorithms)
    }

    /// The DPoP proof verifier these settings describe.
    pub fn proof_verifier(&self) -> Result<ProofVerifier, SettingError> {
        let algorithms = parse_algorithms("CTR_AUTH_DPOP_ALGORITHMS", &self.auth_dpop_algorithms)?;
        let origins = self
            .auth_dpop_origins
            .iter()
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|origin| match reqwest::Url::parse(origin) {
                Ok(url)
                    if url.scheme() == "https"
                        && url.path() == "/"
                        && url.query().is_none()
                        && url.fragment().is_none() =>
                {
                    Ok(url)
                }
                _ => Err(SettingError {
                    setting: "CTR_AUTH_DPOP_ORIGINS",
                    reason: format!("`{origin}` is not an https origin (`https://host[:port]`)"),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.auth_dpop_max_age.is_zero() || self.auth_dpop_max_age > Duration::from_secs(600) {
            return Err(SettingError {
                setting: "CTR_AUTH_DPOP_MAX_AGE",
                reason: "between 1s and 10m: a proof is made for one request".into(),
            });
        }
        if self.auth_dpop_skew > Duration::from_secs(300) {
            return Err(SettingError {
                setting: "CTR_AUTH_DPOP_SKEW",
                reason: "at most 5m".into(),
            });
        }
        Ok(ProofVerifier::new(
            algorithms,
            self.auth_dpop_max_age.as_secs() as i64,
            self.auth_dpop_skew.as_secs() as i64,
            origins,
        ))
    }

    /// Every setting checked, as at start.
    pub fn validate(&self) -> Result<(), SettingError> {
        self.issuer()?;
        self.algorithms()?;
        self.proof_verifier()?;
        if self.auth_audience.trim().is_empty() {
            return Err(SettingError {
                setting: "CTR_AUTH_AUDIENCE",
                reason: "name the audience this API's access tokens carry".into(),
            });
        }
        if self.auth_customer_claim.trim().is_empty() {
            return Err(SettingError {
                setting: "CTR_AUTH_CUSTOMER_CLAIM",
                reason: "name the claim that identifies the customer".into(),
            });
        }
        Ok(())
    }
}

/// A comma-separated list of JWS algorithms; refuses `none`, HMAC, unknown names and an
/// empty list.
fn parse_algorithms(setting: &'static str, list: &str) -> Result<Vec<Algorithm>, SettingError> {
    let invalid = |reason: String| SettingError { setting, reason };
    let algorithms = list
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            let algorithm: Algorithm = name.parse().map_err(|_| {
                invalid(format!(
                    "`{name}` is not a JWS algorithm this service knows"
                ))
            })?;
            if algorithm.family() == AlgorithmFamily::Hmac {
                return Err(invalid(format!(
                    "`{name}` is symmetric: anyone who can verify could mint"
                )));
            }
            Ok(algorithm)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if algorithms.is_empty() {
        return Err(invalid("name at least one algorithm".into()));
    }
    Ok(algorithms)
}

/// An empty variable (compose's `${VAR:-}`) is unset.
fn empty_as_none<'de, D: Deserializer<'de>, T: From<String>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    let value = Option::<String>::deserialize(deserializer)?;
    Ok(value.filter(|v| !v.trim().is_empty()).map(T::from))
}
