//! Generating the private CA chain: root CA → intermediates → issuing CA → leaves, ECDSA P-384.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P384_SHA384,
};
use std::time::Duration;

use time::OffsetDateTime;

use crate::PkiError;

/// What to generate.
#[derive(Debug, Clone)]
pub struct PkiSpec {
    /// Certificates in a leaf's chain, root and leaf included: 2 (root → leaf) to 5.
    pub tiers: u8,
    /// Server leaves: one per service, with its DNS names.
    pub servers: Vec<LeafSpec>,
    /// Client (mTLS) leaves.
    pub clients: Vec<LeafSpec>,
    /// Lifetime of the leaves.
    pub leaf_validity: Duration,
    /// Lifetime of the root and the CAs below it.
    pub ca_validity: Duration,
}

impl Default for PkiSpec {
    fn default() -> Self {
        Self {
            tiers: 3,
            servers: Vec::new(),
            clients: Vec::new(),
            leaf_validity: Duration::from_secs(90 * 86_400),
            ca_validity: Duration::from_secs(3650 * 86_400),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    /// The identity: the service name, used as CN and first DNS SAN.
    pub name: String,
    /// Further DNS names (`localhost` is always added for servers, with `127.0.0.1`).
    pub dns_names: Vec<String>,
}

impl LeafSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            dns_names: Vec::new(),
        }
    }
}

/// A certificate and its private key, PEM encoded.
#[derive(Debug, Clone)]
pub struct PemPair {
    /// The certificate followed by every CA certificate below the root.
    pub chain: String,
    /// PKCS#8.
    pub key: String,
}

/// Whether a leaf serves (server authentication) or calls (client authentication, mTLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    Server,
    Client,
}

/// Everything a deployment needs.
#[derive(Debug, Clone)]
pub struct GeneratedPki {
    pub root: String,
    /// The CA certificates between the root and the leaves, issuing CA first.
    pub intermediates: String,
    /// The issuing CA's certificate alone and its key: what renews the leaves. Only the
    /// PKI's own directory keeps it; no service is ever given it.
    pub issuer: PemPair,
    pub servers: Vec<(String, PemPair)>,
    pub clients: Vec<(String, PemPair)>,
}

type Ca = CertifiedIssuer<'static, KeyPair>;

fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(|e| PkiError::Generate("a P-384 key", e))
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "ctr private PKI");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// From five minutes ago (clocks that lag) until `validity` from now, with the issuer's key
/// identifier.
fn valid_for(params: &mut CertificateParams, validity: Duration) -> Result<(), PkiError> {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = time::Duration::try_from(validity)
        .ok()
        .and_then(|validity| now.checked_add(validity))
        .ok_or(PkiError::Validity(validity))?;
    params.use_authority_key_identifier_extension = true;
    Ok(())
}

fn ca_params(
    common_name: &str,
    path_len: u8,
    validity: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| PkiError::Generate("CA parameters", e))?;
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    valid_for(&mut params, validity)?;
    Ok(params)
}

impl LeafSpec {
    /// The subject alternative names its certificate carries, in order.
    pub fn subject_alt_names(&self, kind: LeafKind) -> Vec<String> {
        let mut names = vec![self.name.clone()];
        names.extend(self.dns_names.iter().cloned());
        if kind == LeafKind::Server {
            names.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
        }
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names
    }
}

fn leaf_params(
    leaf: &LeafSpec,
    kind: LeafKind,
    validity: Duration,
) -> Result<CertificateParams, PkiError> {
    let server = kind == LeafKind::Server;
    let names = leaf.subject_alt_names(kind);
    let mut params =
        CertificateParams::new(names).map_err(|e| PkiError::Generate("leaf subject names", e))?;
    params.distinguished_name = name(&leaf.name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    valid_for(&mut params, validity)?;
    Ok(params)
}

impl PkiSpec {
    pub fn generate(&self) -> Result<GeneratedPki, PkiError> {
        if !(2..=5).contains(&self.tiers) {
            return Err(PkiError::Tiers(self.tiers));
        }
        let cas_below_root = self.tiers - 2;
        let root: Ca = CertifiedIssuer::self_signed(
            ca_params("ctr root CA", cas_below_root, self.ca_validity)?,
            new_key()?,
        )
        .map_err(|e| PkiError::Generate("the root CA", e))?;
        let mut chain: Vec<Ca> = Vec::new();
        for depth in 0..cas_below_root {
            let path_len = cas_below_root - depth - 1;
            let label = if path_len == 0 {
                "ctr issuing CA".to_owned()
            } else {
                format!("ctr intermediate CA {}", depth + 1)
            };
            let parent = chain.last().unwrap_or(&root);
            let ca = CertifiedIssuer::signed_by(
                ca_params(&label, path_len, self.ca_validity)?,
                new_key()?,
                parent,
            )
            .map_err(|e| PkiError::Generate("an intermediate CA", e))?;
            chain.push(ca);
        }
        let issuing = chain.last().unwrap_or(&root);
        let intermediates: String = chain.iter().rev().map(|ca| ca.pem()).collect();
        let ca = IssuingCa {
            issuer: Issuer::from_ca_cert_der(issuing.der(), issuing_key(issuing)?)
                .map_err(|e| PkiError::Generate("the issuing CA", e))?,
            intermediates: intermediates.clone(),
        };
        let leaves = |specs: &[LeafSpec], kind| -> Result<Vec<(String, PemPair)>, PkiError> {
            specs
                .iter()
                .map(|spec| Ok((spec.name.clone(), ca.issue(spec, kind, self.leaf_validity)?)))
                .collect()
        };
        Ok(GeneratedPki {
            root: root.pem(),
            intermediates,
            issuer: PemPair {
                chain: issuing.pem(),
                key: issuing.key().serialize_pem(),
            },
            servers: leaves(&self.servers, LeafKind::Server)?,
            clients: leaves(&self.clients, LeafKind::Client)?,
        })
    }
}

/// A copy of the issuing CA's key pair (rcgen's issuer owns its key).
fn issuing_key(ca: &Ca) -> Result<KeyPair, PkiError> {
    KeyPair::from_pem(&ca.key().serialize_pem())
        .map_err(|e| PkiError::Generate("the issuing CA's key", e))
}

/// The CA that signs leaves, with the chain a leaf is sent with.
pub struct IssuingCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificates between the root and the leaves, issuing CA first.
    intermediates: String,
}

impl std::fmt::Debug for IssuingCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuingCa").finish_non_exhaustive()
    }
}

impl IssuingCa {
    /// The issuing CA from its certificate and key (PEM), with the intermediates a leaf is
    /// sent with.
    pub fn from_pem(cert: &str, key: &str, intermediates: String) -> Result<Self, PkiError> {
        let key =
            KeyPair::from_pem(key).map_err(|e| PkiError::Generate("the issuing CA's key", e))?;
        let issuer = Issuer::from_ca_cert_pem(cert, key)
            .map_err(|e| PkiError::Generate("the issuing CA", e))?;
        Ok(Self {
            issuer,
            intermediates,
        })
    }

    /// A new key and a certificate for `leaf`, valid for `validity` from now.
    pub fn issue(
        &self,
        leaf: &LeafSpec,
        kind: LeafKind,
        validity: Duration,
    ) -> Result<PemPair, PkiError> {
        let key = new_key()?;
        let cert = leaf_params(leaf, kind, validity)?
            .signed_by(&key, &self.issuer)
            .map_err(|e| PkiError::Generate("a leaf certificate", e))?;
        Ok(PemPair {
            chain: cert.pem() + &self.intermediates,
            key: key.serialize_pem(),
        })
    }
}
