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
}

pub const SERVICES: [&str; 4] = ["order-processing", "coupons", "points", "payments"];

impl TestPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}"));
        let spec = PkiSpec {
            servers: SERVICES.iter().map(|s| LeafSpec::new(*s)).collect(),
            clients: vec![LeafSpec::new("order-processing"), LeafSpec::new("intruder")],
            ..PkiSpec::default()
        };
        spec.generate()
            .and_then(|pki| pki.write_to(dir.path()))
            .unwrap_or_else(|e| panic!("the test PKI: {e}"));
        Self { dir }
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
