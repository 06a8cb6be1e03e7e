//! AWS KMS as a [`Kms`], through the official `aws-sdk-kms`: `ECC_NIST_P384` keys,
//! `ECDSA_SHA_384` signatures over the raw message (`MessageType::Raw`, DER, the trait's form),
//! public keys from `GetPublicKey` (DER SPKI). Asymmetric keys do not rotate in AWS, so a
//! version of ctr's key is an AWS key of its own behind the alias `<prefix><key>/v<n>`: the
//! aliases are the ring (the newest signs, every one still there is published), rotating
//! makes a key and its next alias, retiring deletes the alias and disables the key.
//! Credentials come from the standard AWS chain (environment, shared profile, web identity,
//! container and instance roles), never from ctr's settings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec, Tag};
use p384::pkcs8::DecodePublicKey;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{KeyVersion, Kms, KmsError, PublicKey};

/// Where the keys are; credentials are the AWS chain's.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// `CTR_KMS__REGION`: the region (unset: the chain's, `AWS_REGION` or the profile's).
    #[serde(default)]
    pub region: Option<String>,
    /// `CTR_KMS__PROFILE`: a named profile of the shared AWS config files (unset: the chain's).
    #[serde(default)]
    pub profile: Option<String>,
    /// `CTR_KMS__ENDPOINT_URL`: another endpoint (a VPC or FIPS endpoint, an emulator); https.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// `CTR_KMS__CA_FILE`: a PEM bundle the endpoint's certificate is verified against
    /// (unset: the platform's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `CTR_KMS__ALIAS_PREFIX`: the aliases of ctr's key versions begin with it.
    #[serde(default = "default_alias_prefix")]
    pub alias_prefix: String,
    /// `CTR_KMS__REFRESH`: how long the ring (the list of versions) is kept before it is
    /// listed again; a rotation made elsewhere is picked up within it.
    #[serde(default = "default_refresh", with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub refresh: Duration,
}

fn default_alias_prefix() -> String {
    "alias/ctr/".into()
}

fn default_refresh() -> Duration {
    Duration::from_secs(30)
}

impl AwsSettings {
    /// The settings checked as at start.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.endpoint_url
            && !url.starts_with("https://")
        {
            return Err(format!(
                "CTR_KMS__ENDPOINT_URL: `{url}` is not an https URL (every client speaks TLS)"
            ));
        }
        let prefix = &self.alias_prefix;
        let valid = prefix.starts_with("alias/")
            && !prefix.starts_with("alias/aws/")
            && prefix.ends_with('/')
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c));
        if !valid {
            return Err(format!(
                "CTR_KMS__ALIAS_PREFIX: `{prefix}` must begin with `alias/` (not `alias/aws/`), end with `/` and hold only letters, digits, `/`, `_` and `-`"
            ));
        }
        if self.refresh > Duration::from_secs(3600) {
            return Err("CTR_KMS__REFRESH: at most 1h".into());
        }
        Ok(())
    }
}

/// One version of a key: its number, alias and AWS key.
#[derive(Clone, Debug)]
struct Version {
    number: u64,
    alias: String,
    target: String,
}

/// A key's versions, newest first, and when they were listed.
type Ring = (Instant, Arc<Vec<Version>>);

/// AWS KMS behind the [`Kms`] trait.
pub struct AwsKms {
    client: Client,
    prefix: String,
    refresh: Duration,
    /// Per key id: when its aliases were listed, and its versions, newest first.
    rings: Mutex<HashMap<String, Ring>>,
    /// SEC1 points by AWS key id: a key's public half never changes.
    points: Mutex<HashMap<String, Vec<u8>>>,
    /// When each AWS key (a version) was made, by key id.
    made: Mutex<HashMap<String, SystemTime>>,
}

impl std::fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKms")
            .field("region", &self.client.config().region())
            .field("alias_prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What an SDK error means to a caller: unreachable or throttled is worth retrying later.
fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    error: SdkError<E>,
    missing: impl FnOnce() -> KmsError,
) -> KmsError {
    let code = error.code().map(str::to_owned);
    match (&error, code.as_deref()) {
        (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_), _) => KmsError::Unavailable(
            format!("AWS KMS did not answer: {}", DisplayErrorContext(&error)),
        ),
        (_, Some("NotFoundException" | "DisabledException" | "KMSInvalidStateException")) => {
            missing()
        }
        (
            _,
            Some(
                "KMSInternalException"
                | "DependencyTimeoutException"
                | "KeyUnavailableException"
                | "ThrottlingException"
                | "LimitExceededException",
            ),
        ) => KmsError::Unavailable(format!("AWS KMS: {}", DisplayErrorContext(&error))),
        (SdkError::ResponseError(_), _) => KmsError::Unavailable(format!(
            "AWS KMS answered something unreadable: {}",
            DisplayErrorContext(&error)
        )),
        _ => KmsError::Backend(format!("AWS KMS: {}", DisplayErrorContext(&error))),
    }
}

impl AwsKms {
    /// A client for `settings` with credentials from the standard AWS chain; every call
    /// (retries included) times out after `timeout`.
    pub async fn connect(settings: &AwsSettings, timeout: Duration) -> Result<Self, KmsError> {
        settings.validate().map_err(KmsError::Backend)?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(timeout)
                    .connect_timeout(timeout.min(Duration::from_secs(3)))
                    .build(),
            );
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(ca) = &settings.ca_file {
            use aws_smithy_http_client::tls;
            let pem = std::fs::read(ca).map_err(|e| {
                KmsError::Backend(format!("CTR_KMS__CA_FILE: {}: {e}", ca.display()))
            })?;
            let context = tls::TlsContext::builder()
                .with_trust_store(tls::TrustStore::empty().with_pem_certificate(pem))
                .build()
                .map_err(|e| KmsError::Backend(format!("CTR_KMS__CA_FILE: {e}")))?;
            loader = loader.http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::AwsLc,
                    ))
                    .tls_context(context)
                    .build_https(),
            );
        }
        let config = loader.load().await;
        if config.region().is_none() {
            return Err(KmsError::Backend(
                "no AWS region: set CTR_KMS__REGION or AWS_REGION".into(),
            ));
        }
        Ok(Self::with_client(Client::new(&config), settings))
    }

    /// Over a client built elsewhere (tests give one their credentials this way).
    pub fn with_client(client: Client, settings: &AwsSettings) -> Self {
        Self {
            client,
            prefix: settings.alias_prefix.clone(),
            refresh: settings.refresh,
            rings: Mutex::new(HashMap::new()),
            points: Mutex::new(HashMap::new()),
            made: Mutex::new(HashMap::new()),
        }
    }

    fn alias(&self, key_id: &str, number: u64) -> String {
        format!("{}{key_id}/v{number}", self.prefix)
    }

    /// The versions of `key_id`, newest first: listed again once `refresh` has passed or
    /// when `fresh` is asked for.
    async fn ring(&self, key_id: &str, fresh: bool) -> Result<Arc<Vec<Version>>, KmsError> {
        if !fresh
            && let Some((listed, ring)) = self.rings.lock().get(key_id)
            && listed.elapsed() < self.refresh
        {
            return Ok(ring.clone());
        }
        let stem = format!("{}{key_id}/v", self.prefix);
        let entries = self
            .client
            .list_aliases()
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify(e, || KmsError::KeyNotFound(key_id.to_owned())))?;
        let mut versions: Vec<Version> = entries
            .into_iter()
            .filter_map(|entry| {
                let alias = entry.alias_name()?;
                let number = alias.strip_prefix(&stem)?.parse().ok()?;
                Some(Version {
                    number,
                    alias: alias.to_owned(),
                    target: entry.target_key_id()?.to_owned(),
                })
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.number));
        let ring = Arc::new(versions);
        self.rings
            .lock()
            .insert(key_id.to_owned(), (Instant::now(), ring.clone()));
        Ok(ring)
    }

    /// The SEC1 point of AWS key `target`.
    async fn point(&self, target: &str) -> Result<Vec<u8>, KmsError> {
        if let Some(point) = self.points.lock().get(target) {
            return Ok(point.clone());
        }
        let answer = self
            .client
            .get_public_key()
            .key_id(target)
            .send()
            .await
            .map_err(|e| classify(e, || KmsError::KeyNotFound(target.to_owned())))?;
        let spki = answer
            .public_key()
            .ok_or_else(|| KmsError::Backend("GetPublicKey answered no key".into()))?;
        let key = p384::PublicKey::from_public_key_der(spki.as_ref()).map_err(|e| {
            KmsError::Backend(format!(
                "GetPublicKey: not a P-384 SubjectPublicKeyInfo: {e}"
            ))
        })?;
        let point = p384::EncodedPoint::from(key).as_bytes().to_vec();
        self.points.lock().insert(target.to_owned(), point.clone());
        Ok(point)
    }

    /// When AWS key `target` was made.
    async fn made(&self, target: &str) -> Result<SystemTime, KmsError> {
        if let Some(made) = self.made.lock().get(target) {
            return Ok(*made);
        }
        let described = self
            .client
            .describe_key()
            .key_id(target)
            .send()
            .await
            .map_err(|e| classify(e, || KmsError::KeyNotFound(target.to_owned())))?;
        let made = described
            .key_metadata()
            .and_then(|m| m.creation_date())
            .and_then(|date| SystemTime::try_from(*date).ok())
            .ok_or_else(|| KmsError::Backend("DescribeKey answered no creation date".into()))?;
        self.made.lock().insert(target.to_owned(), made);
        Ok(made)
    }

    async fn kid(&self, key_id: &str, version: &Version) -> Result<KeyVersion, KmsError> {
        let point = self.point(&version.target).await?;
        Ok(KeyVersion::numbered(key_id, version.number, &point))
    }

    /// Makes an AWS key and points version `number`'s alias at it. Another replica that
    /// made the same version first wins: this key is then scheduled for deletion and
    /// `Ok(false)` answered. Not retried by the SDK: a second `CreateKey` would leave a key
    /// behind.
    async fn add_version(&self, key_id: &str, number: u64) -> Result<bool, KmsError> {
        let no_retries = aws_sdk_kms::config::Builder::default()
            .retry_config(aws_config::retry::RetryConfig::disabled());
        let tag = Tag::builder()
            .tag_key("ctr:key")
            .tag_value(key_id)
            .build()
            .map_err(|e| KmsError::Backend(e.to_string()))?;
        let created = self
            .client
            .create_key()
            .key_spec(KeySpec::EccNistP384)
            .key_usage(KeyUsageType::SignVerify)
            .description(format!("ctr signing key {key_id}, version {number}"))
            .tags(tag)
            .customize()
            .config_override(no_retries.clone())
            .send()
            .await
            .map_err(|e| classify(e, || KmsError::KeyNotFound(key_id.to_owned())))?;
        let target = created
            .key_metadata()
            .map(|m| m.key_id().to_owned())
            .ok_or_else(|| KmsError::Backend("CreateKey answered no key id".into()))?;
        let aliased = self
            .client
            .create_alias()
            .alias_name(self.alias(key_id, number))
            .target_key_id(&target)
            .customize()
            .config_override(no_retries)
            .send()
            .await;
        self.rings.lock().remove(key_id);
        match aliased {
            Ok(_) => Ok(true),
            Err(error) if error.code() == Some("AlreadyExistsException") => {
                // Lost the race: this key never signed anything.
                let _ = self
                    .client
                    .schedule_key_deletion()
                    .key_id(&target)
                    .pending_window_in_days(7)
                    .send()
                    .await;
                Ok(false)
            }
            Err(error) => Err(classify(error, || KmsError::KeyNotFound(key_id.to_owned()))),
        }
    }

    async fn newest(&self, key_id: &str, fresh: bool) -> Result<KeyVersion, KmsError> {
        let ring = self.ring(key_id, fresh).await?;
        let newest = ring
            .first()
            .ok_or_else(|| KmsError::KeyNotFound(key_id.to_owned()))?;
        self.kid(key_id, newest).await
    }
}

#[async_trait]
impl Kms for AwsKms {
    async fn create_key(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        if let Some(newest) = self.ring(key_id, true).await?.first() {
            return self.kid(key_id, newest).await;
        }
        self.add_version(key_id, 1).await?;
        self.newest(key_id, true).await
    }

    /// The newest version made at least `CTR_KMS__REFRESH` ago. Every replica lists the ring
    /// again within that interval, so a version is published in every replica's JWKS before
    /// any replica signs with it (a relay that meets its `kid` refetches the JWKS and finds
    /// it, whichever replica answers). A key's only version signs at once: no JWKS lacks it
    /// in favour of another.
    async fn primary_version(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        let ring = self.ring(key_id, false).await?;
        let oldest = ring
            .last()
            .ok_or_else(|| KmsError::KeyNotFound(key_id.to_owned()))?;
        for version in ring.iter() {
            if version.number == oldest.number
                || self.made(&version.target).await? + self.refresh <= SystemTime::now()
            {
                return self.kid(key_id, version).await;
            }
        }
        self.kid(key_id, oldest).await
    }

    /// Signs through the version's alias: one call, retried by the SDK on throttling and
    /// transient faults (a signature is safe to ask for twice).
    async fn sign(
        &self,
        key_id: &str,
        version: &KeyVersion,
        message: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let number = version.number_in(key_id)?;
        let missing = || version.not_found_in(key_id);
        let signed = self
            .client
            .sign()
            .key_id(self.alias(key_id, number))
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha384)
            .send()
            .await
            .map_err(|e| classify(e, missing))?;
        signed
            .signature()
            .map(|s| s.as_ref().to_vec())
            .ok_or_else(|| KmsError::Backend("Sign answered no signature".into()))
    }

    async fn public_keys(&self, key_id: &str) -> Result<Vec<PublicKey>, KmsError> {
        let ring = self.ring(key_id, false).await?;
        if ring.is_empty() {
            return Err(KmsError::KeyNotFound(key_id.to_owned()));
        }
        let mut published = Vec::with_capacity(ring.len());
        for version in ring.iter() {
            let sec1 = self.point(&version.target).await?;
            published.push(PublicKey {
                version: KeyVersion::numbered(key_id, version.number, &sec1),
                sec1,
            });
        }
        Ok(published)
    }

    async fn rotate(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        let ring = self.ring(key_id, true).await?;
        let next = ring
            .first()
            .map(|v| v.number + 1)
            .ok_or_else(|| KmsError::KeyNotFound(key_id.to_owned()))?;
        self.add_version(key_id, next).await?;
        self.newest(key_id, true).await
    }

    /// Deletes the version's alias (it is no longer published nor signs) and disables its
    /// AWS key, which an operator may schedule for deletion once nothing needs it.
    async fn disable_version(&self, key_id: &str, version: &KeyVersion) -> Result<(), KmsError> {
        let number = version.number_in(key_id)?;
        let ring = self.ring(key_id, true).await?;
        let missing = || version.not_found_in(key_id);
        let found = ring
            .iter()
            .find(|v| v.number == number)
            .cloned()
            .ok_or_else(missing)?;
        if ring.first().map(|v| v.number) == Some(number) {
            return Err(KmsError::Backend(
                "the primary version cannot be disabled".into(),
            ));
        }
        self.client
            .delete_alias()
            .alias_name(&found.alias)
            .send()
            .await
            .map_err(|e| classify(e, missing))?;
        self.rings.lock().remove(key_id);
        self.client
            .disable_key()
            .key_id(&found.target)
            .send()
            .await
            .map_err(|e| classify(e, missing))?;
        Ok(())
    }
}
