//! PKCS#11 (an HSM, a cloud HSM, SoftHSM2) as a [`Kms`], through the `cryptoki` crate: P-384
//! key pairs on the token labelled `<key>.v<n>` (a version each), `CKM_ECDSA` over a SHA-384
//! digest computed here (SoftHSM2 2.6 has no `CKM_ECDSA_SHA384`), the raw `r || s` it answers
//! converted to DER, public keys from `CKA_EC_POINT` unwrapped from its OCTET STRING. The PIN
//! comes from a file. Calls run on blocking threads, one at a time per session.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha384};

use crate::{KeyVersion, Kms, KmsError, PublicKey};

/// The DER of the secp384r1 curve OID, as `CKA_EC_PARAMS` names it.
const SECP384R1: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// Where the token is and how to log in to it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Settings {
    /// `CTR_KMS__MODULE`: the PKCS#11 library (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// `CTR_KMS__TOKEN_LABEL`: the token's label.
    pub token_label: String,
    /// `CTR_KMS__PIN_FILE`: a file holding the user PIN.
    pub pin_file: PathBuf,
}

impl Pkcs11Settings {
    /// The settings checked as at start: the library and the PIN file exist.
    pub fn validate(&self) -> Result<(), String> {
        if !self.module.is_file() {
            return Err(format!(
                "CTR_KMS__MODULE: {} is not a file",
                self.module.display()
            ));
        }
        if !self.pin_file.is_file() {
            return Err(format!(
                "CTR_KMS__PIN_FILE: {} is not a file",
                self.pin_file.display()
            ));
        }
        if self.token_label.trim().is_empty() {
            return Err("CTR_KMS__TOKEN_LABEL: name the token".into());
        }
        Ok(())
    }
}

/// A logged-in session on the token.
struct Token {
    // Kept alive as long as the session; finalized when the KMS is dropped.
    _context: Pkcs11,
    session: Session,
}

/// PKCS#11 behind the [`Kms`] trait. A session that lost its login is opened again, with a
/// fresh login, before it is used; one the token no longer honours (the HSM restarted, a
/// network HSM dropped the connection) fails that call as unavailable and is opened again by
/// the next.
pub struct Pkcs11Kms {
    token: Arc<Mutex<Option<Token>>>,
    settings: Pkcs11Settings,
}

impl std::fmt::Debug for Pkcs11Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Kms")
            .field("token", &self.settings.token_label)
            .finish_non_exhaustive()
    }
}

fn backend(error: CkError) -> KmsError {
    match &error {
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized,
            _,
        ) => KmsError::Unavailable(format!("PKCS#11: {error}")),
        _ => KmsError::Backend(format!("PKCS#11: {error}")),
    }
}

impl Pkcs11Kms {
    /// Loads the module, finds the token by label and logs in with the PIN from its file.
    pub fn open(settings: &Pkcs11Settings) -> Result<Self, KmsError> {
        settings.validate().map_err(KmsError::Backend)?;
        Ok(Self {
            token: Arc::new(Mutex::new(Some(Self::connect(settings)?))),
            settings: settings.clone(),
        })
    }

    /// A logged-in session on the token.
    fn connect(settings: &Pkcs11Settings) -> Result<Token, KmsError> {
        let pin = std::fs::read_to_string(&settings.pin_file)
            .map_err(|e| KmsError::Backend(format!("{}: {e}", settings.pin_file.display())))?;
        let context = Pkcs11::new(&settings.module).map_err(backend)?;
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(error) => return Err(backend(error)),
        }
        let slot = context
            .get_slots_with_token()
            .map_err(backend)?
            .into_iter()
            .find(|slot| {
                context
                    .get_token_info(*slot)
                    .is_ok_and(|info| info.label() == settings.token_label)
            })
            .ok_or_else(|| {
                KmsError::Backend(format!(
                    "no PKCS#11 token labelled `{}`",
                    settings.token_label
                ))
            })?;
        let session = context.open_rw_session(slot).map_err(backend)?;
        // Login is per application, not per session: another Pkcs11Kms in this process (the
        // other domains of an in-process test, an operator's) may have logged in already.
        match session.login(UserType::User, Some(&AuthPin::new(pin.trim().into()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(error) => return Err(backend(error)),
        }
        Ok(Token {
            _context: context,
            session,
        })
    }

    /// Runs `work` with the session on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Session) -> Result<T, KmsError> + Send + 'static,
    ) -> Result<T, KmsError> {
        let (token, settings) = (self.token.clone(), self.settings.clone());
        tokio::task::spawn_blocking(move || {
            let mut token = token
                .lock()
                .map_err(|_| KmsError::Backend("the PKCS#11 session was poisoned".into()))?;
            // A session that lost its login (the token restarted, a network HSM dropped the
            // connection) is replaced before it is used.
            let logged_in = token.as_ref().is_some_and(|t| {
                t.session.get_session_info().is_ok_and(|info| {
                    matches!(
                        info.session_state(),
                        SessionState::RoUser | SessionState::RwUser
                    )
                })
            });
            if !logged_in {
                *token = None;
                *token = Some(Self::connect(&settings)?);
            }
            let session = &token
                .as_ref()
                .ok_or_else(|| KmsError::Backend("no session".into()))?
                .session;
            let outcome = work(session);
            if matches!(outcome, Err(KmsError::Unavailable(_))) {
                *token = None;
            }
            outcome
        })
        .await
        .map_err(|e| KmsError::Backend(format!("the PKCS#11 call did not finish: {e}")))?
    }
}

/// The versions of `key_id` on the token, newest first, with their SEC1 points.
fn versions(session: &Session, key_id: &str) -> Result<Vec<(u64, Vec<u8>)>, KmsError> {
    let prefix = format!("{key_id}.v");
    let objects = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC),
        ])
        .map_err(backend)?;
    let mut versions = Vec::new();
    for object in objects {
        let attributes = session
            .get_attributes(object, &[AttributeType::Label, AttributeType::EcPoint])
            .map_err(backend)?;
        let (mut label, mut point) = (None, None);
        for attribute in attributes {
            match attribute {
                Attribute::Label(bytes) => label = String::from_utf8(bytes).ok(),
                Attribute::EcPoint(bytes) => point = Some(bytes),
                _ => {}
            }
        }
        let Some(number) = label
            .as_deref()
            .and_then(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let point =
            point.ok_or_else(|| KmsError::Backend("a public key without CKA_EC_POINT".into()))?;
        versions.push((number, unwrap_octet_string(&point)?));
    }
    versions.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    Ok(versions)
}

/// `CKA_EC_POINT` is DER: an OCTET STRING around the SEC1 point (`04 61 04 x y` for P-384).
fn unwrap_octet_string(der: &[u8]) -> Result<Vec<u8>, KmsError> {
    let point = match der {
        [0x04, 0x61, rest @ ..] if rest.len() == 0x61 => rest,
        [0x04, 0x81, 0x61, rest @ ..] if rest.len() == 0x61 => rest,
        // Some modules answer the bare point.
        [0x04, ..] if der.len() == 97 => der,
        _ => {
            return Err(KmsError::Backend(
                "CKA_EC_POINT is not a P-384 point".into(),
            ));
        }
    };
    p384::PublicKey::from_sec1_bytes(point)
        .map_err(|e| KmsError::Backend(format!("CKA_EC_POINT: {e}")))?;
    Ok(point.to_vec())
}

/// The private key object of a version.
fn private_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>, KmsError> {
    Ok(session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(backend)?
        .into_iter()
        .next())
}

/// Makes version `number` of `key_id`: a P-384 pair on the token, the private half sensitive
/// and never extractable.
fn generate(session: &Session, key_id: &str, number: u64) -> Result<(), KmsError> {
    let label = format!("{key_id}.v{number}").into_bytes();
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(SECP384R1.to_vec()),
        Attribute::Label(label.clone()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label),
    ];
    session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .map_err(backend)?;
    Ok(())
}

fn primary(key_id: &str, versions: &[(u64, Vec<u8>)]) -> Result<KeyVersion, KmsError> {
    versions
        .first()
        .map(|(n, sec1)| KeyVersion::numbered(key_id, *n, sec1))
        .ok_or_else(|| KmsError::KeyNotFound(key_id.to_owned()))
}

#[async_trait]
impl Kms for Pkcs11Kms {
    async fn create_key(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        let key_id = key_id.to_owned();
        self.with(move |session| {
            let existing = versions(session, &key_id)?;
            if existing.is_empty() {
                generate(session, &key_id, 1)?;
                return primary(&key_id, &versions(session, &key_id)?);
            }
            primary(&key_id, &existing)
        })
        .await
    }

    async fn primary_version(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        let key_id = key_id.to_owned();
        self.with(move |session| primary(&key_id, &versions(session, &key_id)?))
            .await
    }

    async fn sign(
        &self,
        key_id: &str,
        version: &KeyVersion,
        message: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let number = version.number_in(key_id)?;
        let digest = Sha384::digest(message).to_vec();
        let (key_id, version) = (key_id.to_owned(), version.clone());
        self.with(move |session| {
            let not_found = || version.not_found_in(&key_id);
            // The version must be the one the caller names, fingerprint included.
            let published = versions(session, &key_id)?;
            if !published
                .iter()
                .any(|(n, sec1)| *n == number && KeyVersion::numbered(&key_id, *n, sec1) == version)
            {
                return Err(not_found());
            }
            let key =
                private_key(session, &format!("{key_id}.v{number}"))?.ok_or_else(not_found)?;
            let raw = session
                .sign(&Mechanism::Ecdsa, key, &digest)
                .map_err(backend)?;
            let signature = p384::ecdsa::Signature::from_slice(&raw)
                .map_err(|e| KmsError::Backend(format!("the token's signature: {e}")))?;
            Ok(signature.to_der().as_bytes().to_vec())
        })
        .await
    }

    async fn public_keys(&self, key_id: &str) -> Result<Vec<PublicKey>, KmsError> {
        let key_id = key_id.to_owned();
        self.with(move |session| {
            let published = versions(session, &key_id)?;
            if published.is_empty() {
                return Err(KmsError::KeyNotFound(key_id));
            }
            Ok(published
                .into_iter()
                .map(|(n, sec1)| PublicKey {
                    version: KeyVersion::numbered(&key_id, n, &sec1),
                    sec1,
                })
                .collect())
        })
        .await
    }

    async fn rotate(&self, key_id: &str) -> Result<KeyVersion, KmsError> {
        let key_id = key_id.to_owned();
        self.with(move |session| {
            let latest = versions(session, &key_id)?.first().map_or(0, |(n, _)| *n);
            if latest == 0 {
                return Err(KmsError::KeyNotFound(key_id));
            }
            generate(session, &key_id, latest + 1)?;
            primary(&key_id, &versions(session, &key_id)?)
        })
        .await
    }

    /// Destroys the version's key pair; the primary cannot be disabled.
    async fn disable_version(&self, key_id: &str, version: &KeyVersion) -> Result<(), KmsError> {
        let number = version.number_in(key_id)?;
        let (key_id, version) = (key_id.to_owned(), version.clone());
        self.with(move |session| {
            let published = versions(session, &key_id)?;
            if published.first().map(|(n, _)| *n) == Some(number) {
                return Err(KmsError::Backend(
                    "the primary version cannot be disabled".into(),
                ));
            }
            if !published.iter().any(|(n, _)| *n == number) {
                return Err(version.not_found_in(&key_id));
            }
            let label = format!("{key_id}.v{number}").into_bytes();
            for object in session
                .find_objects(&[Attribute::Label(label)])
                .map_err(backend)?
            {
                session.destroy_object(object).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }
}
