//! The on-disk layout of a PKI directory, and loading PEM files back.
//!
//! ```text
//! DIR/root.pem                  the root CA: what clients (and curl) trust
//! DIR/intermediates.pem         the CAs below the root, issuing CA first
//! DIR/<name>/server.pem         server leaf + intermediates
//! DIR/<name>/server.key         its PKCS#8 key
//! DIR/<name>/client.pem         client (mTLS) leaf + intermediates
//! DIR/<name>/client.key         its PKCS#8 key
//! ```
//!
//! [`deliver`] copies one identity's part of that layout (the trust anchors, its own
//! directory) into a directory of its own, with the same paths: what one service's container
//! mounts.

use std::fs;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{GeneratedPki, PemPair, PkiError};

pub const ROOT_FILE: &str = "root.pem";
pub const INTERMEDIATES_FILE: &str = "intermediates.pem";

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
        for (files, PemPair { chain, key }) in identities {
            write(&files.cert, chain, false)?;
            write(&files.key, key, true)?;
        }
        Ok(())
    }
}

/// Copies into `to` what service `name` may see of the PKI in `from`, and removes anything
/// else `to` holds: the root and intermediates, and `name/` (its server and client leaves and
/// keys). Keys stay readable by their owner only.
pub fn deliver(from: &Path, name: &str, to: &Path) -> Result<(), PkiError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PkiError::Io { path, source }
    };
    let own = from.join(name);
    if !own.is_dir() {
        return Err(PkiError::Io {
            path: own.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such identity"),
        });
    }
    fs::create_dir_all(to).map_err(io(to))?;
    for entry in fs::read_dir(to).map_err(io(to))? {
        let path = entry.map_err(io(to))?.path();
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(io(&path))?;
    }
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
        write(&to.join(name).join(file), &contents, secret)?;
    }
    Ok(())
}

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    fs::write(path, contents).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if secret { 0o600 } else { 0o644 };
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io)?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
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

/// The one private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| PkiError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}
