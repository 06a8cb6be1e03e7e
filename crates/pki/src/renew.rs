//! Renewing the leaves of an existing PKI with the issuing CA key it keeps.
//!
//! [`PkiSpec::renew`] brings a PKI directory to its spec: a leaf the spec names is issued
//! when it is missing, renewed (a new key and certificate) when it expires within the
//! window or names other hosts than the spec gives it, and kept otherwise. Leaves the spec
//! does not name are left as they are. The root and the CAs are never replaced here.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use x509_parser::extensions::GeneralName;

use crate::files::read;
use crate::{
    CertificateRole, INTERMEDIATES_FILE, IdentityFiles, IssuingCa, LeafKind, LeafSpec, PkiError,
    PkiSpec, certificate_info, load_certs, load_key, provider,
};

/// What renewing brought a leaf to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafOutcome {
    /// Valid past the window and naming the right hosts.
    Kept { not_after: SystemTime },
    /// It did not exist.
    Issued,
    /// Replaced, for this reason.
    Renewed { reason: String },
}

/// One leaf of the spec and what [`PkiSpec::renew`] did with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    pub name: String,
    pub kind: LeafKind,
    pub outcome: LeafOutcome,
}

impl IssuingCa {
    /// The issuing CA a PKI directory keeps (`ca/issuing.pem`, `ca/issuing.key`).
    pub fn open(dir: &Path) -> Result<Self, PkiError> {
        let files = IdentityFiles::issuer(dir);
        if !files.key.exists() {
            return Err(PkiError::NoIssuer { path: files.key });
        }
        let text = |path: &Path| {
            String::from_utf8(read(path)?).map_err(|_| PkiError::Pem {
                path: path.to_owned(),
                reason: "not text".into(),
            })
        };
        Self::from_pem(
            &text(&files.cert)?,
            &text(&files.key)?,
            text(&dir.join(INTERMEDIATES_FILE))?,
        )
    }
}

impl PkiSpec {
    /// Issues or renews, in `dir`, every leaf of this spec that is missing, expires within
    /// `within` of `now` (`Duration::MAX`: every leaf), or names other hosts than this spec
    /// gives it.
    pub fn renew(
        &self,
        dir: &Path,
        within: Duration,
        now: SystemTime,
    ) -> Result<Vec<Renewal>, PkiError> {
        let mut ca: Option<IssuingCa> = None;
        let leaves = self
            .servers
            .iter()
            .map(|s| (s, LeafKind::Server))
            .chain(self.clients.iter().map(|c| (c, LeafKind::Client)));
        let mut done = Vec::new();
        for (spec, kind) in leaves {
            let files = IdentityFiles::leaf(dir, &spec.name, kind);
            let outcome = match renewal_reason(&files, spec, kind, within, now)? {
                Ok(not_after) => LeafOutcome::Kept { not_after },
                Err(reason) => {
                    let ca = match &mut ca {
                        Some(ca) => ca,
                        None => ca.insert(IssuingCa::open(dir)?),
                    };
                    files.write(&ca.issue(spec, kind, self.leaf_validity)?)?;
                    reason.map_or(LeafOutcome::Issued, |reason| LeafOutcome::Renewed {
                        reason,
                    })
                }
            };
            done.push(Renewal {
                name: spec.name.clone(),
                kind,
                outcome,
            });
        }
        Ok(done)
    }
}

/// `Ok(not_after)` when the leaf in `files` can stay, else why not (`None`: it is missing).
fn renewal_reason(
    files: &IdentityFiles,
    spec: &LeafSpec,
    kind: LeafKind,
    within: Duration,
    now: SystemTime,
) -> Result<Result<SystemTime, Option<String>>, PkiError> {
    if !files.cert.exists() || !files.key.exists() {
        return Ok(Err(None));
    }
    let chain = load_certs(&files.cert)?;
    // A renewal interrupted between its two renames leaves a new key beside the old
    // certificate: no service can use that pair, so it is renewed whole.
    let paired = load_key(&files.key).and_then(|key| {
        rustls::sign::CertifiedKey::from_der(chain.clone(), key, &provider()).map_err(|e| {
            PkiError::Identity {
                path: files.cert.clone(),
                reason: e.to_string(),
            }
        })
    });
    if let Err(error) = paired {
        return Ok(Err(Some(format!(
            "its key does not match its certificate ({error})"
        ))));
    }
    let info = certificate_info(&chain[0], CertificateRole::Leaf, &files.cert)?;
    let remaining = info.remaining(now);
    if remaining <= within {
        let when = humantime::format_rfc3339_seconds(info.not_after);
        return Ok(Err(Some(if remaining.is_zero() {
            format!("it expired at {when}")
        } else if within == Duration::MAX {
            "every leaf was to be renewed".to_owned()
        } else {
            format!(
                "it expires at {when}, within {}",
                humantime::format_duration(within)
            )
        })));
    }
    let wanted: BTreeSet<String> = spec.subject_alt_names(kind).into_iter().collect();
    let held = subject_alt_names(&chain[0], &files.cert)?;
    if held != wanted {
        return Ok(Err(Some(format!(
            "it names {} instead of {}",
            held.into_iter().collect::<Vec<_>>().join(","),
            wanted.into_iter().collect::<Vec<_>>().join(",")
        ))));
    }
    Ok(Ok(info.not_after))
}

/// The DNS names and IP addresses a certificate is for.
fn subject_alt_names(
    der: &rustls_pki_types::CertificateDer<'_>,
    file: &Path,
) -> Result<BTreeSet<String>, PkiError> {
    let unusable = |reason: String| PkiError::Pem {
        path: file.to_owned(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| unusable(format!("not an X.509 certificate: {e}")))?;
    let Some(names) = cert
        .subject_alternative_name()
        .map_err(|e| unusable(format!("its subject alternative names: {e}")))?
    else {
        return Ok(BTreeSet::new());
    };
    Ok(names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect())
}
