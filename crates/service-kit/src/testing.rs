//! Test support (feature `testing`): one PKI for a whole test world, and configs on port 0.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ctr_pki::{IdentityFiles, LeafSpec, PkiSpec};

use crate::ServerConfig;

/// A private PKI in a temporary directory with a server leaf for every ctr service and the
/// relay's client leaf, plus a client leaf named `intruder` from the same CA.
pub struct TestPki {
    dir: tempfile::TempDir,
    spec: PkiSpec,
    /// The issuer of customers' access tokens the services of this PKI trust, once started.
    customer_issuer: std::sync::OnceLock<String>,
}

pub const SERVICES: [&str; 4] = ["order-processing", "coupons", "points", "payments"];

/// The development issuer's server leaf (it runs beside the services in tests).
pub const DEV_ISSUER: &str = "dev-issuer";

impl TestPki {
    pub fn new() -> Self {
        Self::with_leaf_validity(Duration::from_secs(90 * 86_400))
    }

    /// A PKI whose leaves are valid for `validity` only (certificate renewal tests).
    pub fn with_leaf_validity(validity: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));
        let spec = PkiSpec {
            leaf_validity: validity,
            servers: SERVICES
                .iter()
                .chain([&DEV_ISSUER])
                .map(|s| LeafSpec::new(*s))
                .collect(),
            clients: vec![LeafSpec::new("order-processing"), LeafSpec::new("intruder")],
            ..PkiSpec::default()
        };
        spec.generate()
            .and_then(|pki| pki.write_to(dir.path()))
            .unwrap_or_else(|e| panic!("the test PKI: {e}"));
        Self {
            dir,
            spec,
            customer_issuer: std::sync::OnceLock::new(),
        }
    }

    /// Renews every leaf on disk (new keys, valid for `validity`), as `ctr-pki init
    /// --renew-all` does, with the issuing CA the PKI keeps; the root stays.
    pub fn renew_leaves(&self, validity: Duration) {
        let spec = PkiSpec {
            leaf_validity: validity,
            ..self.spec.clone()
        };
        spec.renew(self.dir.path(), Duration::MAX, std::time::SystemTime::now())
            .unwrap_or_else(|e| panic!("renewing the test PKI: {e}"));
    }

    /// Every server config made from now on trusts `issuer` (an HTTPS URL whose certificate
    /// comes from this PKI) for customers' access tokens.
    pub fn trust_customer_issuer(&self, issuer: &str) {
        let _ = self.customer_issuer.set(issuer.to_owned());
    }

    /// A TLS 1.3 client trusting this PKI's root that sends `Authorization: Bearer <token>`
    /// with every request (unless a request sets its own).
    pub fn customer_client(&self, token: &str) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .unwrap_or_else(|e| panic!("a bearer header: {e}"));
        headers.insert(reqwest::header::AUTHORIZATION, value);
        ctr_pki::reqwest_builder(&self.root(), None)
            .unwrap_or_else(|e| panic!("the test client: {e}"))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers)
            .build()
            .unwrap_or_else(|e| panic!("the test client: {e}"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join(ctr_pki::ROOT_FILE)
    }

    pub fn client_identity(&self, name: &str) -> IdentityFiles {
        IdentityFiles::client(self.dir.path(), name)
    }

    /// The server config of `service`: both listeners on 127.0.0.1, port 0, short grace, its
    /// store an SQLite file beside the PKI (so a restarted service finds its state).
    pub fn server_config(&self, service: &str) -> ServerConfig {
        let server = IdentityFiles::server(self.dir.path(), service);
        let store = self.dir.path().join(format!("{service}.db"));
        ServerConfig {
            store_url: format!("sqlite://{}?mode=rwc", store.display()),
            public_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            admin_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls_root: self.root(),
            tls_cert: server.cert,
            tls_key: server.key,
            shutdown_grace: Duration::from_secs(5),
            // Tests and the load tool drive one customer hard; the limits have tests of their own.
            customer_rate: 100_000,
            customer_burst: 100_000,
            access: ctr_access::AccessSettings {
                auth_issuer: self.customer_issuer.get().cloned(),
                auth_ca_file: Some(self.root()),
                // A key the issuer withdraws stops verifying within this (tests wait for it).
                auth_keys_refresh: Duration::from_secs(2),
                ..ctr_access::AccessSettings::default()
            },
            ..ServerConfig::defaults(service)
        }
    }

    /// A TLS 1.3 client trusting this PKI's root, presenting the client leaf `identity`.
    pub fn client(&self, identity: Option<&str>) -> reqwest::Client {
        let identity = identity.map(|name| self.client_identity(name));
        crate::https_client(&self.root(), identity.as_ref(), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("the test client: {e}"))
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
