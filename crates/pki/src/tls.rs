//! rustls and reqwest configuration: TLS 1.3 only, aws-lc-rs, trust in our root alone.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName};

use crate::{IdentityFiles, PkiError, TlsFiles, load_certs};

/// The one crypto provider of the project, passed explicitly so that a second provider in
/// the dependency tree can never make rustls guess.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Whether a listener asks for a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Server-authenticated TLS only.
    #[default]
    None,
    /// A client certificate is verified against our root when presented; routes decide.
    Optional,
    /// No handshake without a client certificate from our root.
    Required,
}

/// The root store holding only the certificates in `root`.
pub fn root_store(root: &Path) -> Result<Arc<RootCertStore>, PkiError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(root)? {
        store.add(cert).map_err(|e| PkiError::Pem {
            path: root.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(store))
}

/// A TLS 1.3-only server config presenting `identity`, with HTTP/2 and HTTP/1.1 offered.
/// It follows the files when [`TlsFiles::reload`] is called on them; this one never is.
pub fn server_config(
    identity: &IdentityFiles,
    client_auth: ClientAuth,
    root: &Path,
) -> Result<Arc<ServerConfig>, PkiError> {
    TlsFiles::load(root, Some(identity))?.server_config(client_auth)
}

/// A TLS 1.3-only client config trusting only `root`, presenting `identity` if given.
pub fn client_config(
    root: &Path,
    identity: Option<&IdentityFiles>,
) -> Result<ClientConfig, PkiError> {
    TlsFiles::load(root, identity)?.client_config()
}

/// A reqwest client builder over [`client_config`]: HTTPS only, TLS 1.3, our root only.
pub fn reqwest_builder(
    root: &Path,
    identity: Option<&IdentityFiles>,
) -> Result<reqwest::ClientBuilder, PkiError> {
    reqwest_builder_following(&TlsFiles::load(root, identity)?)
}

/// A reqwest client builder over `files`' [`TlsFiles::client_config`]: its handshakes use
/// the root and identity of the last reload.
pub fn reqwest_builder_following(
    files: &Arc<TlsFiles>,
) -> Result<reqwest::ClientBuilder, PkiError> {
    Ok(reqwest::Client::builder()
        .https_only(true)
        .tls_backend_preconfigured(files.client_config()?))
}

/// A reqwest client builder for a server outside the deployment (an OAuth issuer, a KMS):
/// HTTPS only, TLS 1.3, trusting the PEM bundle `ca` when given (a private CA), else the
/// web's root CAs (webpki-roots). No client certificate.
pub fn reqwest_builder_for(ca: Option<&Path>) -> Result<reqwest::ClientBuilder, PkiError> {
    match ca {
        Some(ca) => reqwest_builder(ca, None),
        None => builder_trusting(web_roots(), &[&rustls::version::TLS13]),
    }
}

/// The web's root CAs (webpki-roots).
fn web_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// An HTTPS-only reqwest client builder trusting `roots`, speaking `versions`, presenting no
/// client certificate.
fn builder_trusting(
    roots: RootCertStore,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<reqwest::ClientBuilder, PkiError> {
    let tls = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(PkiError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .https_only(true)
        .tls_backend_preconfigured(tls))
}

/// A reqwest client builder for a receiver anywhere (a webhook endpoint): HTTPS only, TLS 1.3
/// preferred and 1.2 accepted (a receiver is not ours to upgrade), trusting the web's root
/// CAs and the deployment's root `ca` (a receiver inside the deployment). No client
/// certificate.
pub fn reqwest_builder_for_receivers(ca: &Path) -> Result<reqwest::ClientBuilder, PkiError> {
    let mut roots = web_roots();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| PkiError::Pem {
            path: ca.to_owned(),
            reason: e.to_string(),
        })?;
    }
    builder_trusting(roots, &[&rustls::version::TLS13, &rustls::version::TLS12])
}

/// Whether a certificate (already verified by the TLS handshake) names `name` as a DNS SAN.
pub fn certificate_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(end_entity) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    end_entity
        .verify_is_valid_for_subject_name(&server_name)
        .is_ok()
}
