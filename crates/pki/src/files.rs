//! The on-disk layout of a PKI directory, and loading PEM files back.
//!
//! ```text
//! DIR/root.pem                  the root CA: what clients (and curl) trust
//! DIR/intermediates.pem         the CAs below the root, issuing CA first
//! DIR/<name>/server.pem         server leaf + intermediates
//! DIR/<name>/server.key         its PKCS#8 key
//! DIR/<name>/client.pem         client (mTLS) leaf + intermediates
//! DIR/<name>/client.key         its PKCS#8 key
//! DIR/ca/issuing.pem            the issuing CA's certificate alone
//! DIR/ca/issuing.key            its key: what renews leaves (never delivered)
//! ```
//!
//! Every file is written whole or not at all (a temporary file renamed over it), so that a
//! service reading its files while they are renewed sees the old or the new contents.
//!
//! [`deliver`] copies one identity's part of that layout (the trust anchors, its own
//! directory) into a directory of its own, with the same paths: what one service's container
//! mounts.

use std::fs;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{GeneratedPki, LeafKind, PemPair, PkiError};

pub const ROOT_FILE: &str = "root.pem";
pub const INTERMEDIATES_FILE: &str = "intermediates.pem";
/// The directory of the issuing CA's certificate and key: not a service's name.
pub const ISSUER_DIR: &str = "ca";

/// The paths of one identity's certificate chain and key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl IdentityFiles {
    pub fn server(dir: &Path, name: &str) -> Self {
        Self {
            cert: dir.join(name).join("server.pem"),
            key: dir.join(name).join("server.key"),
        }
    }

    pub fn client(dir: &Path, name: &str) -> Self {
        Self {
            cert: dir.join(name).join("client.pem"),
            key: dir.join(name).join("client.key"),
        }
    }

    /// The files of a leaf of `kind`.
    pub fn leaf(dir: &Path, name: &str, kind: LeafKind) -> Self {
        match kind {
            LeafKind::Server => Self::server(dir, name),
            LeafKind::Client => Self::client(dir, name),
        }
    }

    /// The issuing CA's certificate and key.
    pub fn issuer(dir: &Path) -> Self {
        Self {
            cert: dir.join(ISSUER_DIR).join("issuing.pem"),
            key: dir.join(ISSUER_DIR).join("issuing.key"),
        }
    }

    /// Writes `pair`, the key first; the key readable by its owner only.
    pub fn write(&self, pair: &PemPair) -> Result<(), PkiError> {
        write(&self.key, &pair.key, true)?;
        write(&self.cert, &pair.chain, false)
    }
}

impl GeneratedPki {
    /// Writes the layout above. Keys are readable by their owner only.
    pub fn write_to(&self, dir: &Path) -> Result<(), PkiError> {
        write(&dir.join(ROOT_FILE), &self.root, false)?;
        write(&dir.join(INTERMEDIATES_FILE), &self.intermediates, false)?;
        let identities = self
            .servers
            .iter()
            .map(|(name, pair)| (IdentityFiles::server(dir, name), pair))
            .chain(
                self.clients
                    .iter()
                    .map(|(name, pair)| (IdentityFiles::client(dir, name), pair)),
            );
        for (files, pair) in identities {
            files.write(pair)?;
        }
        IdentityFiles::issuer(dir).write(&self.issuer)
    }
}

/// Copies into `to` what service `name` may see of the PKI in `from`, and removes anything
/// else `to` holds: the root and intermediates, and `name/` (its server and client leaves and
/// keys). Keys stay readable by their owner only. Each file is replaced whole, and what is no
/// longer delivered is removed last, so that a service running on `to` never reads a
/// missing or half-written file.
pub fn deliver(from: &Path, name: &str, to: &Path) -> Result<(), PkiError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PkiError::Io { path, source }
    };
    let own = from.join(name);
    if name == ISSUER_DIR || !own.is_dir() {
        return Err(PkiError::Io {
            path: own.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such identity"),
        });
    }
    fs::create_dir_all(to).map_err(io(to))?;
    let mut delivered = vec![
        to.join(ROOT_FILE),
        to.join(INTERMEDIATES_FILE),
        to.join(name),
    ];
    for file in [ROOT_FILE, INTERMEDIATES_FILE] {
        let contents = fs::read_to_string(from.join(file)).map_err(io(&from.join(file)))?;
        write(&to.join(file), &contents, false)?;
    }
    for entry in fs::read_dir(&own).map_err(io(&own))? {
        let path = entry.map_err(io(&own))?.path();
        let Some(file) = path.file_name() else {
            continue;
        };
        let contents = fs::read_to_string(&path).map_err(io(&path))?;
        let secret = path.extension().is_some_and(|e| e == "key");
        let target = to.join(name).join(file);
        write(&target, &contents, secret)?;
        delivered.push(target);
    }
    for dir in [to.to_owned(), to.join(name)] {
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            if delivered.contains(&path) {
                continue;
            }
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Writes `contents` to a temporary file beside `path` and renames it over `path`.
fn write(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io)?;
    let file = tempfile::Builder::new()
        .prefix(".writing-")
        .tempfile_in(parent)
        .map_err(io)?;
    fs::write(file.path(), contents).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if secret { 0o600 } else { 0o644 };
        fs::set_permissions(file.path(), fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    file.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    parse_certs(path, &read(path)?)
}

/// The one private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    parse_key(path, &read(path)?)
}

/// Every certificate in the PEM `bytes` read from `path`, in order; at least one.
pub(crate) fn parse_certs(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PkiError::Pem {
            path: path.to_owned(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// The one private key in the PEM `bytes` read from `path`.
pub(crate) fn parse_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| PkiError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}
