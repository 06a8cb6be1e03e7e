//! A development OAuth 2.0 issuer, so that `docker compose up` runs with authenticated
//! customers and no setup. **Not for production**: every demo customer is a client of its own
//! (`client_id` = the customer id) sharing one configured secret, and the client-credentials
//! grant hands out RFC 9068 access tokens whose `sub` is that customer. The services find it
//! exactly as they find a production issuer: by its issuer URL (OpenID Connect discovery,
//! RFC 8414 metadata, `jwks_uri`).

mod keys;
mod routes;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ctr_access::dpop::ProofVerifier;
use ctr_service_kit::{
    App, ClientAuth, ConfigError, Health, Metrics, ServerConfig, Service, ServiceSettings,
    StartError,
};
use serde::{Deserialize, Serialize};

pub use keys::SigningKey;

/// The dev issuer's settings (`CTR_DEV_ISSUER_*`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DevIssuerSettings {
    /// `CTR_DEV_ISSUER_URL`: the issuer URL as the services reach it (`https://dev-issuer:8443`
    /// under compose); unset, `https://<public address>`.
    pub dev_issuer_url: Option<String>,
    /// `CTR_DEV_ISSUER_CUSTOMERS`: the customers that are clients, comma-separated; a name
    /// ending in `*` admits every id with that prefix (`c_load_*`: ctr-load's customers).
    pub dev_issuer_customers: String,
    /// `CTR_DEV_ISSUER_SECRET`: the client secret every demo customer shares.
    pub dev_issuer_secret: String,
    /// `CTR_DEV_ISSUER_AUDIENCE`: the `aud` of the tokens (the services' `CTR_AUTH_AUDIENCE`).
    pub dev_issuer_audience: String,
    /// `CTR_DEV_ISSUER_TOKEN_TTL`: how long a token is valid.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub dev_issuer_token_ttl: Duration,
    /// `CTR_DEV_ISSUER_KEY_FILE`: the ES256 signing key (PKCS#8 PEM), made on first start.
    pub dev_issuer_key_file: std::path::PathBuf,
}

impl Default for DevIssuerSettings {
    fn default() -> Self {
        Self {
            dev_issuer_url: None,
            dev_issuer_customers: "c_alice,c_bob,c_carol,c_load_*".into(),
            dev_issuer_secret: "demo-secret".into(),
            dev_issuer_audience: "ctr".into(),
            dev_issuer_token_ttl: Duration::from_secs(15 * 60),
            dev_issuer_key_file: "/data/dev-issuer-key.pem".into(),
        }
    }
}

impl ServiceSettings for DevIssuerSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.customers().is_empty() {
            return Err(ConfigError::Setting {
                setting: "CTR_DEV_ISSUER_CUSTOMERS",
                reason: "name at least one customer".into(),
            });
        }
        if self.dev_issuer_secret.len() < 8 {
            return Err(ConfigError::Setting {
                setting: "CTR_DEV_ISSUER_SECRET",
                reason: "use at least 8 characters".into(),
            });
        }
        if self.dev_issuer_token_ttl.is_zero() {
            return Err(ConfigError::Setting {
                setting: "CTR_DEV_ISSUER_TOKEN_TTL",
                reason: "must be positive".into(),
            });
        }
        Ok(())
    }
}

impl DevIssuerSettings {
    /// Whether `client` is one of the configured customers.
    pub fn knows(&self, client: &str) -> bool {
        self.customers().iter().any(|c| match c.strip_suffix('*') {
            Some(prefix) => client.starts_with(prefix) && client.len() > prefix.len(),
            None => c == client,
        })
    }

    pub fn customers(&self) -> Vec<String> {
        self.dev_issuer_customers
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// What the routes share.
pub struct Issuer {
    url: OnceLock<String>,
    /// Replaced by [`Issuer::replace_key`]: tokens signed by the key before stop verifying.
    key: parking_lot::RwLock<Arc<SigningKey>>,
    settings: DevIssuerSettings,
    /// Checks the DPoP proofs clients present at the token endpoint.
    proofs: ProofVerifier,
    /// The proofs accepted, until they are too old to be accepted again (in memory: this
    /// issuer runs as one process).
    seen: parking_lot::Mutex<HashMap<String, i64>>,
}

impl Issuer {
    /// The issuer URL (`iss`).
    pub fn url(&self) -> &str {
        self.url.get().map_or("", String::as_str)
    }

    /// An access token for `customer` granting `scopes`, valid for `ttl`: what the token
    /// endpoint answers, for tests and tools that hold this issuer in process.
    pub fn mint(&self, customer: &str, scopes: &[&str], ttl: Duration) -> String {
        self.mint_bound(customer, scopes, ttl, None)
    }

    /// As [`Self::mint`], bound to the DPoP key with thumbprint `jkt` when given (`cnf.jkt`,
    /// RFC 9449 section 6.1).
    pub fn mint_bound(
        &self,
        customer: &str,
        scopes: &[&str],
        ttl: Duration,
        jkt: Option<&str>,
    ) -> String {
        let now = unix_now();
        let mut claims = serde_json::json!({
                "iss": self.url(),
                "sub": customer,
                "aud": self.settings.dev_issuer_audience,
                "client_id": customer,
                "scope": scopes.join(" "),
                "iat": now,
                "exp": now + ttl.as_secs() as i64,
                "jti": uuid::Uuid::now_v7().to_string(),
        });
        if let Some(jkt) = jkt {
            claims["cnf"] = serde_json::json!({ "jkt": jkt });
        }
        self.sign(&serde_json::json!({"typ": "at+jwt"}), &claims)
    }

    /// Signs `claims` under `header` (whose `alg` and `kid` are set here) with this issuer's
    /// key: tests use it to make tokens that are wrong in one way only.
    pub fn sign(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        self.key.read().sign(header, claims)
    }

    /// Withdraws the signing key and publishes a fresh one in its place (kept in memory
    /// only): what a compromised key's revocation looks like to the services, for tests.
    pub fn replace_key(&self) -> Result<(), String> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| e.to_string())?;
        *self.key.write() = Arc::new(SigningKey::from_pem(&pair.serialize_pem())?);
        Ok(())
    }

    pub fn signing_key(&self) -> Arc<SigningKey> {
        self.key.read().clone()
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The dev issuer ready to run.
pub struct DevIssuer {
    pub app: App,
    pub issuer: Arc<Issuer>,
}

pub async fn build(
    server: &ServerConfig,
    settings: &DevIssuerSettings,
) -> Result<DevIssuer, StartError> {
    settings.validate()?;
    let key = SigningKey::load_or_create(&settings.dev_issuer_key_file)
        .map_err(|e| StartError::Service(format!("CTR_DEV_ISSUER_KEY_FILE: {e}")))?;
    tracing::warn!(
        "dev-issuer: a development OAuth issuer for the demo customers; never use it in production"
    );
    let issuer = Arc::new(Issuer {
        url: OnceLock::new(),
        key: parking_lot::RwLock::new(Arc::new(key)),
        settings: settings.clone(),
        proofs: ctr_access::AccessSettings::default()
            .proof_verifier()
            .map_err(|e| StartError::Service(e.to_string()))?,
        seen: parking_lot::Mutex::new(HashMap::new()),
    });
    let health = Health::default();
    let kid = issuer.signing_key().kid().to_owned();
    health.register("signing-key", move || Ok(format!("ES256 key {kid}")));
    let service = Service {
        name: "dev-issuer",
        client_auth: ClientAuth::None,
    };
    let app = App::build(
        service,
        server,
        routes::router(issuer.clone()),
        health,
        Metrics::default(),
    )
    .await?;
    let url = settings
        .dev_issuer_url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| format!("https://{}", app.public_addr()));
    let _ = issuer.url.set(url.trim_end_matches('/').to_owned());
    Ok(DevIssuer { app, issuer })
}
