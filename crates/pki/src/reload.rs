//! TLS material that follows its files: a trust root and an optional identity (certificate
//! chain and key), read again by [`TlsFiles::reload`] when their bytes change.
//!
//! The rustls configurations built here never hold the material itself: the server's
//! certificate and the client's identity come from a resolver, peers are verified by a
//! verifier, and both read the material current at each handshake. A reload therefore
//! changes what the next handshake uses and nothing else: connections already open keep
//! their session, and no listener or HTTP client is rebuilt.
//!
//! A client's TLS sessions are kept per reading of the files: a session resumed after a
//! reload would present the identity of the session it resumes, so a reload starts with no
//! session to resume.
//!
//! A reload that finds a half-written state (a certificate whose key has not been replaced
//! yet, a truncated PEM file) is refused and the material in use is kept; the next reload
//! takes the files once they are whole again.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, ResolvesClientCert, Resumption,
    Tls12ClientSessionValue, Tls13ClientSessionValue, WebPkiServerVerifier,
};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::files::{parse_certs, parse_key, read};
use crate::{ClientAuth, IdentityFiles, PkiError, provider};

/// What a certificate is to the files it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertificateRole {
    /// The identity's own (end-entity) certificate.
    Leaf,
    /// A CA certificate sent along with the leaf (an intermediate).
    Chain,
    /// A trust anchor from the root file.
    Root,
}

impl CertificateRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leaf => "leaf",
            Self::Chain => "chain",
            Self::Root => "root",
        }
    }
}

/// One certificate in use, and when it stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub role: CertificateRole,
    /// The file it was read from.
    pub file: PathBuf,
    /// Its subject's common name (or whole subject when it has none).
    pub subject: String,
    pub not_after: SystemTime,
}

impl CertificateInfo {
    /// How long it stays valid from `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or(Duration::ZERO)
    }
}

/// When a certificate's validity ends, and its subject.
pub fn certificate_info(
    der: &CertificateDer<'_>,
    role: CertificateRole,
    file: &Path,
) -> Result<CertificateInfo, PkiError> {
    let unusable = |reason: String| PkiError::Pem {
        path: file.to_owned(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| unusable(format!("not an X.509 certificate: {e}")))?;
    let subject = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map_or_else(|| cert.subject().to_string(), str::to_owned);
    let seconds = cert.validity().not_after.timestamp();
    let not_after = u64::try_from(seconds)
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
        .ok_or_else(|| unusable(format!("{subject}: its validity ends before 1970")))?;
    Ok(CertificateInfo {
        role,
        file: file.to_owned(),
        subject,
        not_after,
    })
}

/// What one reading of the files gave.
struct Material {
    digest: u64,
    identity: Option<Arc<CertifiedKey>>,
    server_verifier: Arc<WebPkiServerVerifier>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    certificates: Vec<CertificateInfo>,
    /// The client's resumable sessions, made with this material's identity.
    sessions: Arc<ClientSessionMemoryCache>,
}

/// A trust root and an optional identity, from files that may be replaced while in use.
pub struct TlsFiles {
    root: PathBuf,
    identity: Option<IdentityFiles>,
    current: ArcSwap<Material>,
    /// The digest of the last contents refused, so that a broken state is reported once.
    refused: AtomicU64,
    /// The provider's signature algorithms: the handshake signatures of peers are checked
    /// with them whatever the files hold (as the webpki verifiers do).
    algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("root", &self.root)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl TlsFiles {
    /// Reads the files; every one must be usable.
    pub fn load(root: &Path, identity: Option<&IdentityFiles>) -> Result<Arc<Self>, PkiError> {
        let (digest, contents) = read_all(root, identity)?;
        let material = Material::parse(root, identity, digest, &contents)?;
        Ok(Arc::new(Self {
            root: root.to_owned(),
            identity: identity.cloned(),
            current: ArcSwap::from_pointee(material),
            refused: AtomicU64::new(0),
            algorithms: provider().signature_verification_algorithms,
        }))
    }

    /// Reads the files again: `Ok(true)` when they changed and are now in use, `Ok(false)`
    /// when nothing changed (or the same unusable contents were refused before), and an
    /// error when they changed into something unusable (the material in use is kept).
    pub fn reload(&self) -> Result<bool, PkiError> {
        let (digest, contents) = read_all(&self.root, self.identity.as_ref())?;
        if digest == self.current.load().digest || digest == self.refused.load(Ordering::Relaxed) {
            return Ok(false);
        }
        match Material::parse(&self.root, self.identity.as_ref(), digest, &contents) {
            Ok(material) => {
                self.current.store(Arc::new(material));
                Ok(true)
            }
            Err(error) => {
                self.refused.store(digest, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    /// The certificates in use: the identity's chain, then the trust anchors.
    pub fn certificates(&self) -> Vec<CertificateInfo> {
        self.current.load().certificates.clone()
    }

    /// The identity's certificate file, or the root file when there is no identity.
    pub fn describe(&self) -> &Path {
        self.identity.as_ref().map_or(&self.root, |i| &i.cert)
    }

    /// A TLS 1.3-only server config presenting the identity, with HTTP/2 and HTTP/1.1
    /// offered, that follows reloads.
    pub fn server_config(
        self: &Arc<Self>,
        client_auth: ClientAuth,
    ) -> Result<Arc<ServerConfig>, PkiError> {
        if self.identity.is_none() {
            return Err(PkiError::Identity {
                path: self.root.clone(),
                reason: "a server needs a certificate and key".into(),
            });
        }
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(PkiError::Tls)?;
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional | ClientAuth::Required => {
                builder.with_client_cert_verifier(Arc::new(FollowingClientVerifier {
                    files: self.clone(),
                    mandatory: client_auth == ClientAuth::Required,
                }))
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(FollowingIdentity(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A TLS 1.3-only client config trusting only the root, presenting the identity if
    /// there is one, that follows reloads.
    pub fn client_config(self: &Arc<Self>) -> Result<ClientConfig, PkiError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(PkiError::Tls)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(FollowingServerVerifier(self.clone())));
        let mut config = match self.identity {
            None => builder.with_no_client_auth(),
            Some(_) => builder.with_client_cert_resolver(Arc::new(FollowingIdentity(self.clone()))),
        };
        config.resumption = Resumption::store(Arc::new(FollowingSessions(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The bytes of the root, certificate and key files, and their digest.
fn read_all(
    root: &Path,
    identity: Option<&IdentityFiles>,
) -> Result<(u64, Vec<Vec<u8>>), PkiError> {
    let mut contents = vec![read(root)?];
    if let Some(files) = identity {
        contents.push(read(&files.cert)?);
        contents.push(read(&files.key)?);
    }
    let mut hasher = DefaultHasher::new();
    contents.hash(&mut hasher);
    Ok((hasher.finish(), contents))
}

impl Material {
    fn parse(
        root: &Path,
        identity: Option<&IdentityFiles>,
        digest: u64,
        contents: &[Vec<u8>],
    ) -> Result<Self, PkiError> {
        let anchors = parse_certs(root, &contents[0])?;
        let mut certificates = Vec::new();
        let identity = match identity {
            None => None,
            Some(files) => {
                let chain = parse_certs(&files.cert, &contents[1])?;
                let key = parse_key(&files.key, &contents[2])?;
                for (i, cert) in chain.iter().enumerate() {
                    let role = if i == 0 {
                        CertificateRole::Leaf
                    } else {
                        CertificateRole::Chain
                    };
                    certificates.push(certificate_info(cert, role, &files.cert)?);
                }
                let key = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
                    PkiError::Identity {
                        path: files.cert.clone(),
                        reason: format!("{e} (key {})", files.key.display()),
                    }
                })?;
                Some(Arc::new(key))
            }
        };
        let mut store = RootCertStore::empty();
        for cert in anchors {
            certificates.push(certificate_info(&cert, CertificateRole::Root, root)?);
            store.add(cert).map_err(|e| PkiError::Pem {
                path: root.to_owned(),
                reason: e.to_string(),
            })?;
        }
        let store = Arc::new(store);
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(store.clone(), provider())
                .build()
                .map_err(|e| PkiError::Verifier(e.to_string()))?;
        let client_verifier = WebPkiClientVerifier::builder_with_provider(store, provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| PkiError::Verifier(e.to_string()))?;
        Ok(Self {
            digest,
            identity,
            server_verifier,
            client_verifier,
            certificates,
            sessions: Arc::new(ClientSessionMemoryCache::new(256)),
        })
    }
}

/// The identity in use at each handshake, as a server or as a client.
#[derive(Debug)]
struct FollowingIdentity(Arc<TlsFiles>);

impl ResolvesServerCert for FollowingIdentity {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current.load().identity.clone()
    }
}

impl ResolvesClientCert for FollowingIdentity {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current.load().identity.clone()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies servers against the root in use at each handshake.
#[derive(Debug)]
struct FollowingServerVerifier(Arc<TlsFiles>);

impl ServerCertVerifier for FollowingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current.load().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algorithms.supported_schemes()
    }
}

/// Verifies client certificates against the root in use at each handshake.
#[derive(Debug)]
struct FollowingClientVerifier {
    files: Arc<TlsFiles>,
    mandatory: bool,
}

impl ClientCertVerifier for FollowingClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No hints: they would name the roots of the first reading. Our clients present their
    /// one certificate whatever the server hints.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.files
            .current
            .load()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.files.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.files.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.files.algorithms.supported_schemes()
    }
}

/// The client's sessions of the material in use: none survive a reload.
#[derive(Debug)]
struct FollowingSessions(Arc<TlsFiles>);

impl FollowingSessions {
    fn sessions(&self) -> Arc<ClientSessionMemoryCache> {
        self.0.current.load().sessions.clone()
    }
}

impl ClientSessionStore for FollowingSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.sessions().set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.sessions().kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.sessions().set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.sessions().tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.sessions().remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.sessions().insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.sessions().take_tls13_ticket(server_name)
    }
}
