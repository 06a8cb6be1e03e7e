//! The issuer's signing keys: its metadata (OpenID Connect discovery, else RFC 8414) names
//! its `jwks_uri`; the key set is cached and fetched again, at most once per
//! `CTR_AUTH_KEYS_REFRESH`, when a token names a key it does not hold.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;
use serde::Deserialize;
use sha2::Digest as _;

/// The most an issuer's metadata or key set may weigh.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// One usable key: what it verifies and, when the JWK says, the one algorithm it is for.
#[derive(Clone)]
pub struct IssuerKey {
    pub key: Arc<DecodingKey>,
    pub alg: Option<Algorithm>,
}

#[derive(Default)]
struct Cached {
    jwks_uri: Option<reqwest::Url>,
    by_kid: HashMap<String, IssuerKey>,
    /// Keys without a `kid`: used only when the set holds exactly one key.
    unnamed: Vec<IssuerKey>,
    loaded: bool,
    last_attempt: Option<Instant>,
    /// The SHA-256 of the key set as last fetched: a fetch that finds another set counts a
    /// new generation.
    fingerprint: Option<[u8; 32]>,
}

/// The keys of the configured issuer.
pub struct IssuerKeys {
    issuer: String,
    http: reqwest::Client,
    min_refresh: Duration,
    cached: RwLock<Cached>,
    /// One fetch at a time; a request that waited finds the keys its predecessor fetched.
    fetching: tokio::sync::Mutex<()>,
    /// Counts the key sets held: what was verified under another is verified again.
    generation: AtomicU64,
}

/// A key set read key by key, so that one key of a kind jsonwebtoken does not know (an
/// encryption key, a new curve) does not hide the others.
#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    jwks_uri: String,
}

/// Why the keys could not be had (logged; a client sees `auth-issuer-unavailable`).
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("fetching {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the metadata at {url} names issuer `{found}`, not the configured one")]
    IssuerMismatch { url: String, found: String },
    #[error("the metadata's jwks_uri `{0}` is not an https URL")]
    JwksUri(String),
    #[error("fetched too recently; waiting before the next attempt")]
    RateLimited,
}

impl IssuerKeys {
    pub fn new(issuer: &str, http: reqwest::Client, min_refresh: Duration) -> Self {
        Self {
            issuer: issuer.to_owned(),
            http,
            min_refresh,
            cached: RwLock::new(Cached::default()),
            fetching: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    /// Which key set is held: it changes whenever a fetch finds keys added, changed or
    /// withdrawn.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a key set has been fetched (readiness).
    pub fn loaded(&self) -> bool {
        self.cached.read().loaded
    }

    /// The key a token's `kid` names (a lone unnamed key when it names none), fetching the
    /// key set when none is held or the `kid` is unknown and a fetch is due.
    pub async fn key(&self, kid: Option<&str>) -> Result<Option<IssuerKey>, KeysError> {
        if let Some(found) = self.lookup(kid) {
            return Ok(Some(found));
        }
        let seen = self.cached.read().last_attempt;
        let _one = self.fetching.lock().await;
        if self.cached.read().last_attempt != seen {
            // Someone fetched while this request waited.
            return Ok(self.lookup(kid));
        }
        match self.refresh_locked().await {
            Ok(()) => Ok(self.lookup(kid)),
            // Keys are held and this kid is unknown: refuse the token, do not fail open.
            Err(KeysError::RateLimited) if self.loaded() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// How long until a refresh is allowed (`CTR_AUTH_KEYS_REFRESH` after the last attempt).
    pub fn next_refresh_in(&self) -> Duration {
        self.cached
            .read()
            .last_attempt
            .map_or(Duration::ZERO, |at| {
                self.min_refresh.saturating_sub(at.elapsed())
            })
    }

    /// Fetches the metadata (once) and the key set now, unless the last attempt is too recent.
    pub async fn refresh(&self) -> Result<(), KeysError> {
        let _one = self.fetching.lock().await;
        self.refresh_locked().await
    }

    fn lookup(&self, kid: Option<&str>) -> Option<IssuerKey> {
        let cached = self.cached.read();
        match kid {
            Some(kid) => cached.by_kid.get(kid).cloned(),
            None if cached.by_kid.len() + cached.unnamed.len() == 1 => cached
                .unnamed
                .first()
                .or_else(|| cached.by_kid.values().next())
                .cloned(),
            None => None,
        }
    }

    async fn refresh_locked(&self) -> Result<(), KeysError> {
        let (jwks_uri, last) = {
            let cached = self.cached.read();
            (cached.jwks_uri.clone(), cached.last_attempt)
        };
        if last.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return Err(KeysError::RateLimited);
        }
        self.cached.write().last_attempt = Some(Instant::now());
        let jwks_uri = match jwks_uri {
            Some(uri) => uri,
            None => self.discover().await?,
        };
        let set: RawKeySet = self.fetch_json(jwks_uri.clone()).await?;
        let (by_kid, unnamed) = usable_keys(&set);
        let fingerprint: [u8; 32] =
            sha2::Sha256::digest(serde_json::to_vec(&set.keys).unwrap_or_default()).into();
        let mut cached = self.cached.write();
        if cached.fingerprint != Some(fingerprint) {
            tracing::info!(issuer = %self.issuer, keys = by_kid.len() + unnamed.len(), "customer issuer keys fetched");
            cached.by_kid = by_kid;
            cached.unnamed = unnamed;
            cached.fingerprint = Some(fingerprint);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        cached.jwks_uri = Some(jwks_uri);
        cached.loaded = true;
        Ok(())
    }

    /// The issuer's `jwks_uri`, from OpenID Connect discovery or else RFC 8414 metadata,
    /// whose `issuer` must be the configured one exactly.
    async fn discover(&self) -> Result<reqwest::Url, KeysError> {
        let mut last_error = None;
        for url in metadata_urls(&self.issuer)? {
            match self.fetch_json::<Metadata>(url.clone()).await {
                Ok(metadata) if metadata.issuer == self.issuer => {
                    let jwks = reqwest::Url::parse(&metadata.jwks_uri)
                        .ok()
                        .filter(|u| u.scheme() == "https")
                        .ok_or(KeysError::JwksUri(metadata.jwks_uri))?;
                    return Ok(jwks);
                }
                Ok(metadata) => {
                    return Err(KeysError::IssuerMismatch {
                        url: url.to_string(),
                        found: metadata.issuer,
                    });
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| KeysError::Fetch {
            url: self.issuer.clone(),
            reason: "no metadata location".into(),
        }))
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        url: reqwest::Url,
    ) -> Result<T, KeysError> {
        let failed = |reason: String| KeysError::Fetch {
            url: url.to_string(),
            reason,
        };
        let response = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("status {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(failed("the document is too large".into()));
        }
        let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(failed("the document is too large".into()));
        }
        serde_json::from_slice(&body).map_err(|e| failed(e.to_string()))
    }
}

/// OpenID Connect discovery (`{issuer}/.well-known/openid-configuration`), then RFC 8414
/// (`/.well-known/oauth-authorization-server` inserted before the issuer's path).
fn metadata_urls(issuer: &str) -> Result<Vec<reqwest::Url>, KeysError> {
    let invalid = |reason: &str| KeysError::Fetch {
        url: issuer.to_owned(),
        reason: reason.to_owned(),
    };
    let base = reqwest::Url::parse(issuer).map_err(|_| invalid("not a URL"))?;
    let trimmed = issuer.trim_end_matches('/');
    let oidc = reqwest::Url::parse(&format!("{trimmed}/.well-known/openid-configuration"))
        .map_err(|_| invalid("not a URL"))?;
    let path = base.path().trim_end_matches('/');
    let mut rfc8414 = base.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    Ok(vec![oidc, rfc8414])
}

/// The set's signature keys that jsonwebtoken can use, by `kid`; encryption keys and key
/// types it cannot read are left out.
fn usable_keys(set: &RawKeySet) -> (HashMap<String, IssuerKey>, Vec<IssuerKey>) {
    let mut by_kid = HashMap::new();
    let mut unnamed = Vec::new();
    let keys = set
        .keys
        .iter()
        .filter_map(|key| serde_json::from_value::<Jwk>(key.clone()).ok());
    for jwk in &keys.collect::<Vec<_>>() {
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let Some(key) = issuer_key(jwk) else {
            continue;
        };
        match &jwk.common.key_id {
            Some(kid) => {
                by_kid.insert(kid.clone(), key);
            }
            None => unnamed.push(key),
        }
    }
    (by_kid, unnamed)
}

fn issuer_key(jwk: &Jwk) -> Option<IssuerKey> {
    let key = DecodingKey::from_jwk(&crate::jwk::with_full_coordinates(jwk)?).ok()?;
    if key.family() == jsonwebtoken::AlgorithmFamily::Hmac {
        // A symmetric "key" in a public set is never trusted.
        return None;
    }
    let alg = match &jwk.common.key_algorithm {
        Some(alg) => Some(alg.to_string().parse::<Algorithm>().ok()?),
        None => None,
    };
    Some(IssuerKey {
        key: Arc::new(key),
        alg,
    })
}
