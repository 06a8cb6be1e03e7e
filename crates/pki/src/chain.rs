//! Generating the private CA chain: root CA → intermediates → issuing CA → leaves, ECDSA P-384.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P384_SHA384,
};
use time::{Duration, OffsetDateTime};

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
    /// Lifetime of the leaves; CAs live ten times longer.
    pub leaf_validity: Duration,
}

impl Default for PkiSpec {
    fn default() -> Self {
        Self {
            tiers: 3,
            servers: Vec::new(),
            clients: Vec::new(),
            leaf_validity: Duration::days(90),
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

/// Everything a deployment needs.
#[derive(Debug, Clone)]
pub struct GeneratedPki {
    pub root: String,
    /// The CA certificates between the root and the leaves, issuing CA first.
    pub intermediates: String,
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
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + validity;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn leaf_params(
    leaf: &LeafSpec,
    server: bool,
    validity: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut names = vec![leaf.name.clone()];
    names.extend(leaf.dns_names.iter().cloned());
    if server {
        names.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
    }
    names.dedup();
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
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + validity;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

impl PkiSpec {
    pub fn generate(&self) -> Result<GeneratedPki, PkiError> {
        if !(2..=5).contains(&self.tiers) {
            return Err(PkiError::Tiers(self.tiers));
        }
        let ca_validity = self.leaf_validity * 10;
        let cas_below_root = self.tiers - 2;
        let root: Ca = CertifiedIssuer::self_signed(
            ca_params("ctr root CA", cas_below_root, ca_validity)?,
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
                ca_params(&label, path_len, ca_validity)?,
                new_key()?,
                parent,
            )
            .map_err(|e| PkiError::Generate("an intermediate CA", e))?;
            chain.push(ca);
        }
        let issuing = chain.last().unwrap_or(&root);
        let intermediates: String = chain.iter().rev().map(|ca| ca.pem()).collect();

        let leaf = |spec: &LeafSpec, server: bool| -> Result<(String, PemPair), PkiError> {
            let key = new_key()?;
            let cert = leaf_params(spec, server, self.leaf_validity)?
                .signed_by(&key, issuing)
                .map_err(|e| PkiError::Generate("a leaf certificate", e))?;
            Ok((
                spec.name.clone(),
                PemPair {
                    chain: cert.pem() + &intermediates,
                    key: key.serialize_pem(),
                },
            ))
        };
        Ok(GeneratedPki {
            root: root.pem(),
            intermediates: intermediates.clone(),
            servers: self
                .servers
                .iter()
                .map(|s| leaf(s, true))
                .collect::<Result<_, _>>()?,
            clients: self
                .clients
                .iter()
                .map(|c| leaf(c, false))
                .collect::<Result<_, _>>()?,
        })
    }
}
