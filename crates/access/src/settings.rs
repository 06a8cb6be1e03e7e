//! The issuer settings, flattened into every service's configuration (`CTR_AUTH_*`).

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::{Deserialize, Deserializer, Serialize};

/// The algorithms accepted unless `CTR_AUTH_ALGORITHMS` says otherwise: asymmetric ones only.
pub const DEFAULT_ALGORITHMS: &str = "RS256,PS256,ES256,ES384,EdDSA";

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    pub auth_keys_refresh: Duration,
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
        let invalid = |reason: String| SettingError {
            setting: "CTR_AUTH_ALGORITHMS",
            reason,
        };
        let algorithms = self
            .auth_algorithms
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

    /// Every setting checked, as at start.
    pub fn validate(&self) -> Result<(), SettingError> {
        self.issuer()?;
        self.algorithms()?;
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

/// An empty variable (compose's `${VAR:-}`) is unset.
fn empty_as_none<'de, D: Deserializer<'de>, T: From<String>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    let value = Option::<String>::deserialize(deserializer)?;
    Ok(value.filter(|v| !v.trim().is_empty()).map(T::from))
}
