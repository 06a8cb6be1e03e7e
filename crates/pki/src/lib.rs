//! The private PKI of a ctr deployment: an rcgen CA chain (root → issuing CA → leaves,
//! ECDSA P-384), its PEM files, and TLS 1.3-only rustls and reqwest configuration that trusts
//! that root and nothing else.
//!
//! ```
//! use ctr_pki::{ClientAuth, IdentityFiles, LeafSpec, PkiSpec};
//!
//! let dir = tempfile::tempdir()?;
//! let spec = PkiSpec {
//!     servers: vec![LeafSpec::new("coupons")],
//!     clients: vec![LeafSpec::new("order-processing")],
//!     ..PkiSpec::default()
//! };
//! spec.generate()?.write_to(dir.path())?;
//!
//! let root = dir.path().join(ctr_pki::ROOT_FILE);
//! let server = ctr_pki::server_config(&IdentityFiles::server(dir.path(), "coupons"), ClientAuth::Optional, &root)?;
//! assert_eq!(server.alpn_protocols[0], b"h2");
//! let client = ctr_pki::reqwest_builder(&root, Some(&IdentityFiles::client(dir.path(), "order-processing")))?.build()?;
//! # drop(client);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod chain;
pub mod cli;
mod files;
mod reload;
mod renew;
mod tls;

use std::path::PathBuf;

pub use chain::{GeneratedPki, IssuingCa, LeafKind, LeafSpec, PemPair, PkiSpec};
pub use files::{
    INTERMEDIATES_FILE, ISSUER_DIR, IdentityFiles, ROOT_FILE, deliver, load_certs, load_key,
};
pub use reload::{CertificateInfo, CertificateRole, TlsFiles, certificate_info};
pub use renew::{LeafOutcome, Renewal};
pub use tls::{
    ClientAuth, certificate_names, client_config, provider, reqwest_builder,
    reqwest_builder_following, reqwest_builder_for, reqwest_builder_for_receivers, root_store,
    server_config,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("a chain has 2 to 5 tiers (root and leaf included), not {0}")]
    Tiers(u8),
    #[error("{0} could not be generated: {1}")]
    Generate(&'static str, #[source] rcgen::Error),
    #[error("a validity of {0:?} ends past the dates a certificate can hold")]
    Validity(std::time::Duration),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not usable PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("the certificate and key in {path} do not form a usable identity: {reason}")]
    Identity { path: PathBuf, reason: String },
    #[error("TLS configuration failed: {0}")]
    Tls(#[source] rustls::Error),
    #[error("the client certificate verifier could not be built: {0}")]
    Verifier(String),
    #[error(
        "{path} is missing: this PKI was made without keeping its issuing CA's key, so its leaves cannot be renewed; replace it (ctr-pki init --force) and give clients the new root"
    )]
    NoIssuer { path: PathBuf },
}
