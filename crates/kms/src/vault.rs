//! Vault / OpenBao transit as a [`Kms`]: `ecdsa-p384` keys, `sign/<key>/sha2-384` (DER, the
//! trait's form), key versions as `kid` versions, public keys from the key's read endpoint,
//! rotation by `rotate`, retirement by raising `min_decryption_version`. Authenticates with a
//! token file or AppRole, logging in again when the token stops working.

use std::path::PathBuf;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p384::pkcs8::DecodePublicKey;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{KeyVersion, Kms, KmsError, PublicKey};

/// How the service authenticates to Vault or OpenBao.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VaultSettings {
    /// `CTR_KMS__ADDR`: the server's address (`https://vault.example:8200`).
    pub addr: String,
    /// `CTR_KMS__MOUNT`: the transit engine's mount path.
    #[serde(default = "default_mount")]
    pub mount: String,
    /// `CTR_KMS__NAMESPACE`: a Vault Enterprise / OpenBao namespace, if any.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `CTR_KMS__TOKEN_FILE`: a file holding a token (read again at each login).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `CTR_KMS__ROLE_ID` and `CTR_KMS__SECRET_ID_FILE`: AppRole login instead of a token.
    #[serde(default)]
    pub role_id: Option<String>,
    #[serde(default)]
    pub secret_id_file: Option<PathBuf>,
    /// `CTR_KMS__APPROLE_MOUNT`: where the AppRole auth method is mounted.
    #[serde(default = "default_approle")]
    pub approle_mount: String,
    /// `CTR_KMS__CA_FILE`: a PEM bundle the server's certificate is verified against.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_mount() -> String {
    "transit".into()
}

fn default_approle() -> String {
    "approle".into()
}

impl VaultSettings {
    /// The settings checked as at start: an https address, one way to log in.
    pub fn validate(&self) -> Result<(), String> {
        if !self.addr.starts_with("https://") {
            return Err(format!(
                "CTR_KMS__ADDR: `{}` is not an https URL (every client speaks TLS 1.3)",
                self.addr
            ));
        }
        match (&self.token_file, &self.role_id, &self.secret_id_file) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => Ok(()),
            _ => Err(
                "set CTR_KMS__TOKEN_FILE, or CTR_KMS__ROLE_ID with CTR_KMS__SECRET_ID_FILE (AppRole)"
                    .into(),
            ),
        }
    }
}

/// Vault or OpenBao transit behind the [`Kms`] trait.
pub struct VaultKms {
    settings: VaultSettings,
    http: reqwest::Client,
    token: tokio::sync::RwLock<Option<String>>,
}

impl std::fmt::Debug for VaultKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultKms")
            .field("addr", &self.settings.addr)
            .field("mount", &self.settings.mount)
            .finish_non_exhaustive()
    }
}

/// One key as transit describes it.
struct KeyInfo {
    latest: u64,
    /// Published versions, newest first, with their SEC1 points.
    versions: Vec<(u64, Vec<u8>)>,
}

impl VaultKms {
    /// A client for `settings` over `http` (which trusts the server's CA). Logs in at the
    /// first request.
    pub fn new(settings: VaultSettings, http: reqwest::Client) -> Self {
        Self {
            settings,
            http,
            token: tokio::sync::RwLock::new(None),
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/v1/{}",
            self.settings.addr.trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }

    /// A token: the cached one, else a new login.
    async fn token(&self) -> Result<String, KmsError> {
        if let Some(token) = self.token.read().await.clone() {
            return Ok(token);
        }
        let mut slot = self.token.write().await;
        if let Some(token) = slot.clone() {
            return Ok(token);
        }
        let token = self.login().await?;
        *slot = Some(token.clone());
        Ok(token)
    }

    async fn login(&self) -> Result<String, KmsError> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|e| KmsError::Backend(format!("{}: {e}", path.display())))
        };
        if let Some(file) = &self.settings.token_file {
            return read(file);
        }
        let (Some(role_id), Some(secret_file)) =
            (&self.settings.role_id, &self.settings.secret_id_file)
        else {
            return Err(KmsError::Backend("no way to log in is configured".into()));
        };
        let secret_id = read(secret_file)?;
        let path = format!("auth/{}/login", self.settings.approle_mount);
        let mut request = self.http.post(self.url(&path));
        if let Some(namespace) = &self.settings.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        let response = request
            .json(&json!({"role_id": role_id, "secret_id": secret_id}))
            .send()
            .await
            .map_err(unavailable)?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        body["auth"]["client_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| KmsError::Backend(format!("AppRole login refused ({status})")))
    }

    /// Sends a request with the token; on 403 logs in once more and retries.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, KmsError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let mut request = self
                .http
                .request(method.clone(), self.url(path))
                .header("X-Vault-Token", token);
            if let Some(namespace) = &self.settings.namespace {
                request = request.header("X-Vault-Namespace", namespace);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(unavailable)?;
            let status = response.status();
            if status == reqwest::StatusCode::FORBIDDEN && attempt == 0 {
                *self.token.write().await = None;
                continue;
            }
            let text = response.text().await.map_err(unavailable)?;
            let value: Value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::Null)
            };
            if status.is_success() {
                return Ok(value);
            }
            let errors = value["errors"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            return Err(if errors.contains("no such key version") {
                KmsError::VersionNotFound {
                    key_id: path.to_owned(),
                    version: String::new(),
                }
            } else if status == reqwest::StatusCode::NOT_FOUND {
                KmsError::KeyNotFound(path.rsplit('/').next().unwrap_or(path).to_owned())
            } else if status.is_server_error() {
                KmsError::Unavailable(format!("the KMS answered {status}: {}", errors.trim()))
            } else {
                KmsError::Backend(format!("{status}: {}", errors.trim()))
            });
        }
        Err(KmsError::Backend("the token was refused twice".into()))
    }

    async fn key(&self, key_id: &str) -> Result<KeyInfo, KmsError> {
        let body = self
            .call(
                reqwest::Method::GET,
                &format!("{}/keys/{key_id}", self.settings.mount),
                None,
            )
            .await?;
        let data = &body["data"];
        if data["type"] != "ecdsa-p384" {
            return Err(KmsError::Backend(format!(
                "key `{key_id}` is {}, not ecdsa-p384",
                data["type"]
            )));
        }
        let latest = data["latest_version"].as_u64().unwrap_or(0);
        let mut versions = Vec::new();
        if let Some(keys) = data["keys"].as_object() {
            for (number, key) in keys {
                let (Ok(number), Some(pem)) = (number.parse::<u64>(), key["public_key"].as_str())
                else {
                    continue;
                };
                let point = p384::PublicKey::from_public_key_pem(pem).map_err(|e| {
                    KmsError::Backend(format!("version {number}'s public key: {e}"))
                })?;
                versions.push((number, point.to_sec1_bytes().to_vec()));
            }
        }
        let min = data["min_decryption_version"].as_u64().unwrap_or(1);
        versions.retain(|(n, _)| *n >= min);
        versions.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        Ok(KeyInfo { latest, versions })
    }

    fn primary_of(key_id: &str, info: &KeyInfo) -> Result<KeyVersion, KmsError> {
        info.versions
            .iter()
            .find(|(n, _)| *n == info.latest)
            .map(|(n, sec1)| KeyVersion::numbered(key_id, *n, sec1))
            .ok_or_else(|| KmsError::NoEnabledVersion(key_id.to_owned()))
    }
}

fn unavailable(error: reqwest::Error) -> KmsError {
    KmsError::Unavailable(if error.is_timeout() {
        "the KMS did not answer in time".into()
    } else {
        format!("the KMS could not be reached: {}", error.without_url())
    })
}

#[async_trait]
impl Kms for VaultKms {
    async fn create_key(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        match self.key(key_id).await {
            Ok(info) => return Self::primary_of(key_id, &info),
            Err(KmsError::KeyNotFound(_)) => {}
            Err(error) => return Err(error),
        }
        self.call(
            reqwest::Method::POST,
            &format!("{}/keys/{key_id}", self.settings.mount),
            Some(json!({"type": "ecdsa-p384"})),
        )
        .await?;
        Self::primary_of(key_id, &self.key(key_id).await?)
    }

    async fn primary_version(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        Self::primary_of(key_id, &self.key(key_id).await?)
    }

    async fn sign(
        &self,
        key_id: &str,
        version: &KeyVersion,
        message: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let number = version.number_in(key_id)?;
        let body = self
            .call(
                reqwest::Method::POST,
                &format!("{}/sign/{key_id}/sha2-384", self.settings.mount),
                Some(json!({
                    "input": STANDARD.encode(message),
                    "key_version": number,
                    "marshaling_algorithm": "asn1",
                })),
            )
            .await
            .map_err(|e| match e {
                KmsError::VersionNotFound { .. } => version.not_found_in(key_id),
                other => other,
            })?;
        let signature = body["data"]["signature"]
            .as_str()
            .ok_or_else(|| KmsError::Backend("the sign answer carries no signature".into()))?;
        let encoded = signature
            .strip_prefix(&format!("vault:v{number}:"))
            .ok_or_else(|| KmsError::Backend("the signature names another key version".into()))?;
        STANDARD
            .decode(encoded)
            .map_err(|e| KmsError::Backend(format!("the signature is not base64: {e}")))
    }

    async fn public_keys(&self, key_id: &str) -> Result<Vec<PublicKey>, KmsError> {
        let info = self.key(key_id).await?;
        Ok(info
            .versions
            .iter()
            .map(|(n, sec1)| PublicKey {
                version: KeyVersion::numbered(key_id, *n, sec1),
                sec1: sec1.clone(),
            })
            .collect())
    }

    async fn rotate(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        self.call(
            reqwest::Method::POST,
            &format!("{}/keys/{key_id}/rotate", self.settings.mount),
            None,
        )
        .await?;
        self.primary_version(key_id).await
    }

    /// Transit retires versions oldest first (`min_decryption_version`): only the oldest
    /// published version that is not the primary can be disabled.
    async fn disable_version(&self, key_id: &str, version: &KeyVersion) -> Result<(), KmsError> {
        let number = version.number_in(key_id)?;
        let info = self.key(key_id).await?;
        let oldest = info.versions.last().map(|(n, _)| *n);
        if oldest != Some(number) || number == info.latest {
            return Err(KmsError::Backend(format!(
                "transit retires versions oldest first and never the primary: retire v{} first",
                oldest.unwrap_or(0)
            )));
        }
        self.call(
            reqwest::Method::POST,
            &format!("{}/keys/{key_id}/config", self.settings.mount),
            Some(json!({"min_decryption_version": number + 1})),
        )
        .await?;
        Ok(())
    }
}
