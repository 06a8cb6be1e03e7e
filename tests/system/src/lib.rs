//! A whole ctr system in one process: the four services on 127.0.0.1, port 0, over real TLS
//! 1.3 and mTLS, sharing one test PKI and one fake clock (set to the real time at start).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test harness fails loudly"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ctr_domain_kit::{DomainApp, DomainSettings, Ledger, SharedState};
use ctr_service_kit::testing::TestPki;
use ctr_token::{Clock, FakeClock, SystemClock};
use order_processing::faults::SagaFaults;
use order_processing::{IssuerEntry, Relay, RelaySettings};

pub mod faults;
pub mod proxy;
pub mod receiver;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use coupons::Coupons;
pub use payments::Payments;
pub use points::Points;

/// The development issuer every world's services trust for customers' access tokens, kept
/// in process so that a test can mint a token (or a wrong one) without a round trip.
pub struct TestIssuer {
    pub running: Running,
    pub issuer: Arc<dev_issuer::Issuer>,
}

impl TestIssuer {
    /// Starts a dev issuer with this PKI's `dev-issuer` leaf and makes every server config of
    /// the PKI trust it.
    pub async fn start(pki: &TestPki) -> Self {
        let settings = dev_issuer::DevIssuerSettings {
            dev_issuer_key_file: pki.dir().join("dev-issuer-key.pem"),
            ..dev_issuer::DevIssuerSettings::default()
        };
        let built = dev_issuer::build(
            &pki.server_config(ctr_service_kit::testing::DEV_ISSUER),
            &settings,
        )
        .await
        .unwrap();
        pki.trust_customer_issuer(built.issuer.url());
        Self {
            issuer: built.issuer,
            running: Running::start(built.app),
        }
    }

    /// An access token for `customer` with every scope, valid for an hour.
    pub fn token(&self, customer: &str) -> String {
        self.issuer.mint(
            customer,
            &ctr_service_kit::scopes::ALL,
            Duration::from_secs(3600),
        )
    }
}

/// One running service.
pub struct Running {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// The scrape listener, when `CTR_METRICS_ADDR` is set.
    pub metrics: Option<SocketAddr>,
    pub stop: CancellationToken,
    pub stopped: JoinHandle<()>,
}

impl Running {
    pub fn start(app: ctr_service_kit::App) -> Self {
        let (public, admin, stop) = (app.public_addr(), app.admin_addr(), app.shutdown_token());
        let metrics = app.metrics_addr();
        let stopped = tokio::spawn(async move { app.run_until_stopped().await.unwrap() });
        Self {
            public,
            admin,
            metrics,
            stop,
            stopped,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.public.port())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.admin.port())
    }

    /// Stops the service and waits until it no longer listens.
    pub async fn stop(self) {
        self.stop.cancel();
        self.stopped.await.unwrap();
    }
}

/// The public ports a restarted world keeps.
struct Ports {
    coupons: SocketAddr,
    points: SocketAddr,
    payments: SocketAddr,
    relay: SocketAddr,
}

/// Each service's `CTR_STORE_URL`.
#[derive(Debug, Clone)]
pub struct Stores {
    pub coupons: String,
    pub points: String,
    pub payments: String,
    pub relay: String,
}

/// The PostgreSQL server the suite runs against, when `CTR_TEST_POSTGRES_URL` names one
/// (a database of a role that may create databases); SQLite otherwise.
pub fn postgres() -> Option<String> {
    std::env::var("CTR_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// Whether a test that needs several processes over one PostgreSQL database runs: in CI
/// (`CI=true`) it must, so a missing `CTR_TEST_POSTGRES_URL` fails it instead of skipping.
pub fn replicas_run(test: &str) -> bool {
    if postgres().is_some() {
        return true;
    }
    assert!(
        std::env::var("CI").map_or(true, |ci| ci != "true"),
        "{test} needs PostgreSQL: CI=true and CTR_TEST_POSTGRES_URL is not set"
    );
    eprintln!("skipped {test}: replicas need PostgreSQL (set CTR_TEST_POSTGRES_URL)");
    false
}

/// Makes every claim in the relay store at `url` run out now, as time passing would for a
/// relay that died: the recovery worker may take its checkouts over at its next pass.
pub async fn expire_claims(url: &str) {
    ctr_store::execute_once(
        url,
        "UPDATE orders SET lease_expires_ms = 0 WHERE lease_expires_ms IS NOT NULL",
    )
    .await
    .unwrap();
}

/// The order events in the relay store at `url`: `(order id, type)` in the order each order's
/// events happened.
pub async fn relay_events(url: &str) -> Vec<(String, String)> {
    let migrations = ctr_service_kit::with_kit_migrations(order_processing::MIGRATIONS);
    let store = ctr_store::Store::open(url, &migrations).await.unwrap();
    store
        .fetch_all(ctr_store::query_as(
            "SELECT order_id, type FROM order_events ORDER BY order_id, seq",
        ))
        .await
        .unwrap()
}

/// A store of its own for service `name`: an SQLite file beside the test PKI, or a fresh
/// database on the PostgreSQL server of [`postgres`].
pub async fn fresh_store(pki: &TestPki, name: &str) -> String {
    let Some(admin) = postgres() else {
        return pki.server_config(name).store_url;
    };
    let database = format!(
        "ctr_test_{}_{}",
        name.replace('-', "_"),
        uuid::Uuid::now_v7().simple()
    );
    ctr_store::execute_once(&admin, &format!("CREATE DATABASE {database}"))
        .await
        .unwrap();
    let (server, _) = admin.rsplit_once('/').unwrap();
    format!("{server}/{database}")
}

impl Stores {
    async fn fresh(pki: &TestPki) -> Self {
        Self {
            coupons: fresh_store(pki, "coupons").await,
            points: fresh_store(pki, "points").await,
            payments: fresh_store(pki, "payments").await,
            relay: fresh_store(pki, "order-processing").await,
        }
    }
}

/// `key` as an `Idempotency-Key` header's value (a Structured Field string).
pub fn idempotency_key(key: &str) -> String {
    format!("\"{key}\"")
}

/// An answer to a POST, with what a retry under an idempotency key needs to see.
#[derive(Debug, Clone)]
pub struct Keyed {
    pub status: u16,
    pub body: Value,
    /// `Idempotent-Replayed: true`: the first answer, given again.
    pub replayed: bool,
    pub location: Option<String>,
}

pub struct Domain<L: Ledger> {
    pub running: Running,
    pub state: SharedState<L>,
}

pub struct World {
    pub pki: TestPki,
    /// The issuer of the customers' access tokens.
    pub issuer: TestIssuer,
    /// Who owns each order, hold and payment this world's helpers created (by id), so that
    /// `get` and `post` act as the owner.
    owners: parking_lot::Mutex<std::collections::HashMap<String, String>>,
    anonymous: reqwest::Client,
    pub clock: Arc<FakeClock>,
    pub coupons: Domain<Coupons>,
    pub points: Domain<Points>,
    pub payments: Domain<Payments>,
    pub relay: Running,
    pub relay_state: Arc<Relay>,
    /// A customer: trusts our root, presents no certificate, and sends c_alice's access token
    /// unless a request names another.
    pub customer: reqwest::Client,
    pub domain_settings: DomainSettings,
    pub relay_settings: RelaySettings,
    pub stores: Stores,
}

/// The relay as a process of its own (`ctr-crashing-relay`, a binary of this package), for
/// the tests that crash it whole: `abort_after` aborts it right after the n-th durable store
/// operation of its sagas, `failpoints` arms the store's fail points (`FAILPOINTS`).
pub struct ChildRelay {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    child: tokio::process::Child,
    _settings: tempfile::TempDir,
}

impl ChildRelay {
    pub async fn start(
        binary: &str,
        server: &ctr_service_kit::ServerConfig,
        settings: &RelaySettings,
        abort_after: Option<usize>,
        failpoints: Option<&str>,
    ) -> Self {
        use tokio::io::AsyncBufReadExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("relay.json");
        std::fs::write(
            &file,
            serde_json::to_vec(&json!({"server": server, "relay": settings})).unwrap(),
        )
        .unwrap();
        let mut command = tokio::process::Command::new(binary);
        command
            .arg(&file)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(at) = abort_after {
            command.env("CTR_TEST_ABORT_AFTER", at.to_string());
        }
        if let Some(failpoints) = failpoints {
            command.env("FAILPOINTS", failpoints);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut first = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::io::BufReader::new(stdout).read_line(&mut first),
        )
        .await
        .expect("the relay process never said where it listens")
        .unwrap();
        let mut addresses = first.split_whitespace().map(|a| a.parse().unwrap());
        Self {
            public: addresses.next().expect("its public address"),
            admin: addresses.next().expect("its admin address"),
            child,
            _settings: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.public.port())
    }

    /// Polls its readiness probe until it answers 200 (`true`), or the process has aborted
    /// first (`false`: a fault armed for the whole process may strike while it starts).
    pub async fn ready(&mut self, client: &reqwest::Client) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let url = format!("https://127.0.0.1:{}/admin/v1/readyz", self.admin.port());
        loop {
            if self.aborted() {
                return false;
            }
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return true;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the relay process never became ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process has aborted (by itself, at its fault).
    pub fn aborted(&mut self) -> bool {
        use std::os::unix::process::ExitStatusExt as _;
        matches!(self.child.try_wait(), Ok(Some(status)) if status.signal() == Some(6))
    }

    /// Kills it, as SIGKILL does, if it still runs.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A relay on a runtime of its own, so that a test can kill it the way a crash would: every
/// task stops at its next await, nothing is drained, nothing more is written.
pub struct CrashableRelay {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl CrashableRelay {
    pub async fn start(
        server: ctr_service_kit::ServerConfig,
        settings: RelaySettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::start_with_faults(server, settings, clock, None).await
    }

    /// As [`Self::start`], with a hook at each of the saga's store operations.
    pub async fn start_with_faults(
        server: ctr_service_kit::ServerConfig,
        settings: RelaySettings,
        clock: Arc<dyn Clock>,
        faults: Option<Arc<dyn SagaFaults>>,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (public, admin) = runtime
            .spawn(async move {
                let built = order_processing::build_with_faults(&server, &settings, clock, faults)
                    .await
                    .unwrap();
                let addrs = (built.app.public_addr(), built.app.admin_addr());
                tokio::spawn(built.app.run_until_stopped());
                addrs
            })
            .await
            .unwrap();
        Self {
            public,
            admin,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.public.port())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.admin.port())
    }

    /// Kills the relay mid-flight, as SIGKILL would.
    pub fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for CrashableRelay {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn domain<L: Ledger>(built: DomainApp<L>) -> Domain<L> {
    Domain {
        state: built.state,
        running: Running::start(built.app),
    }
}

/// The JSON of a compact JWS's header (`0`) or claims (`1`), read without verifying it: for
/// tests that look inside the tokens they were given.
///
/// # Panics
/// When that part is missing or not base64url JSON.
pub fn jws_part(token: &str, index: usize) -> Value {
    use base64::Engine as _;
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// Settings every test domain shares: a short token and hold lifetime, and room for the
/// races of one customer (the per-customer cap has a test of its own).
pub fn domain_settings() -> DomainSettings {
    DomainSettings {
        token_ttl: Duration::from_secs(120),
        hold_ttl: Duration::from_secs(600),
        max_holds_per_customer: 1000,
        ..DomainSettings::with_mock_kms()
    }
}

impl World {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts the domains, then the relay with its settings adjusted by `tune`.
    pub async fn start_with(tune: impl FnOnce(&mut RelaySettings)) -> Self {
        Self::start_custom(domain_settings(), tune).await
    }

    /// As [`Self::start_with`], with the domains' settings given (not validated, so a test
    /// may set a hold shorter than its token).
    pub async fn start_custom(
        settings: DomainSettings,
        tune: impl FnOnce(&mut RelaySettings),
    ) -> Self {
        Self::start_tuned(settings, tune, |_| {}).await
    }

    /// As [`Self::start_custom`], with every service's server config adjusted by
    /// `tune_server` (its connection, request and per-customer limits).
    pub async fn start_tuned(
        settings: DomainSettings,
        tune: impl FnOnce(&mut RelaySettings),
        tune_server: fn(&mut ctr_service_kit::ServerConfig),
    ) -> Self {
        Self::start_in(TestPki::new(), settings, tune, tune_server).await
    }

    /// As [`Self::start_tuned`], in `pki`: when it already trusts a customer issuer (see
    /// [`TestPki::trust_customer_issuer`]), the services trust that one, not the world's own.
    pub async fn start_in(
        pki: TestPki,
        settings: DomainSettings,
        tune: impl FnOnce(&mut RelaySettings),
        tune_server: fn(&mut ctr_service_kit::ServerConfig),
    ) -> Self {
        let issuer = TestIssuer::start(&pki).await;
        let clock = Arc::new(FakeClock::at_secs(SystemClock.now_secs()));
        let stores = Stores::fresh(&pki).await;
        Self::boot(
            pki,
            issuer,
            clock,
            settings,
            tune,
            tune_server,
            None,
            stores,
        )
        .await
    }

    /// Stops every service (gracefully) and starts them again on the same ports, stores and
    /// settings: what `docker compose restart` does.
    pub async fn restart(self) -> Self {
        let World {
            pki,
            issuer,
            clock,
            coupons,
            points,
            payments,
            relay,
            domain_settings,
            relay_settings,
            stores,
            ..
        } = self;
        let ports = Ports {
            coupons: coupons.running.public,
            points: points.running.public,
            payments: payments.running.public,
            relay: relay.public,
        };
        for running in [relay, coupons.running, points.running, payments.running] {
            running.stop().await;
        }
        Self::boot(
            pki,
            issuer,
            clock,
            domain_settings,
            |s| *s = relay_settings,
            |_| {},
            Some(ports),
            stores,
        )
        .await
    }

    /// Another points process over this world's points store (a replica), with `domain` as
    /// its domain settings, running on ports of its own.
    pub async fn points_replica(&self, domain: DomainSettings) -> Running {
        let settings = points::PointsSettings {
            domain,
            ..points::PointsSettings::default()
        };
        let built = points::build_with(
            &self.replica_server("points"),
            &settings,
            self.clock.clone(),
        )
        .await
        .unwrap();
        Running::start(built.app)
    }

    /// Another relay process over this world's relay store, with its settings and clock, on
    /// ports of its own, ready (a replica).
    pub async fn relay_replica(&self) -> CrashableRelay {
        let replica = CrashableRelay::start(
            self.replica_server("order-processing"),
            self.relay_settings.clone(),
            self.clock.clone(),
        )
        .await;
        self.wait_until_admin_ready(replica.admin).await;
        replica
    }

    /// The server config of another process of service `name` over the same store as this
    /// world's one (a replica), on a port of its own.
    pub fn replica_server(&self, name: &str) -> ctr_service_kit::ServerConfig {
        let store_url = match name {
            "coupons" => &self.stores.coupons,
            "points" => &self.stores.points,
            "payments" => &self.stores.payments,
            _ => &self.stores.relay,
        };
        ctr_service_kit::ServerConfig {
            store_url: store_url.clone(),
            ..self.pki.server_config(name)
        }
    }

    #[allow(clippy::too_many_arguments, reason = "a world's parts, passed once")]
    async fn boot(
        pki: TestPki,
        issuer: TestIssuer,
        clock: Arc<FakeClock>,
        settings: DomainSettings,
        tune: impl FnOnce(&mut RelaySettings),
        tune_server: fn(&mut ctr_service_kit::ServerConfig),
        ports: Option<Ports>,
        stores: Stores,
    ) -> Self {
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let server = |name: &str, port: Option<SocketAddr>, store: &str| {
            let mut config = pki.server_config(name);
            tune_server(&mut config);
            config.store_url = store.to_owned();
            if let Some(addr) = port {
                config.public_addr = addr;
            }
            config
        };
        let coupons = domain(
            coupons::build_with(
                &server(
                    "coupons",
                    ports.as_ref().map(|p| p.coupons),
                    &stores.coupons,
                ),
                &settings,
                dyn_clock.clone(),
            )
            .await
            .unwrap(),
        );
        let points_settings = points::PointsSettings {
            domain: settings.clone(),
            ..points::PointsSettings::default()
        };
        let points = domain(
            points::build_with(
                &server("points", ports.as_ref().map(|p| p.points), &stores.points),
                &points_settings,
                dyn_clock.clone(),
            )
            .await
            .unwrap(),
        );
        let payments = domain(
            payments::build_with(
                &server(
                    "payments",
                    ports.as_ref().map(|p| p.payments),
                    &stores.payments,
                ),
                &settings,
                dyn_clock.clone(),
            )
            .await
            .unwrap(),
        );

        let client = pki.client_identity("order-processing");
        let mut relay_settings = RelaySettings {
            issuers: issuer_registry(
                coupons.running.public,
                points.running.public,
                payments.running.public,
            ),
            client_cert: client.cert,
            client_key: client.key,
            call_timeout: Duration::from_secs(1),
            call_retries: 1,
            // Tests open many orders for one customer; the cap has a test of its own.
            max_open_orders_per_customer: 1000,
            ..RelaySettings::default()
        };
        tune(&mut relay_settings);
        let built = order_processing::build_with(
            &server(
                "order-processing",
                ports.as_ref().map(|p| p.relay),
                &stores.relay,
            ),
            &relay_settings,
            dyn_clock,
        )
        .await
        .unwrap();
        let relay_state = built.relay.clone();
        let relay = Running::start(built.app);
        let customer = pki.customer_client(&issuer.token("c_alice"));
        let anonymous = pki.client(None);
        let world = Self {
            pki,
            issuer,
            owners: parking_lot::Mutex::default(),
            anonymous,
            clock,
            coupons,
            points,
            payments,
            relay,
            relay_state,
            customer,
            domain_settings: settings,
            relay_settings,
            stores,
        };
        world.wait_until_ready(&world.relay).await;
        world
    }

    /// Polls a service's readiness probe until it answers 200 (at most 10 s).
    pub async fn wait_until_ready(&self, service: &Running) {
        self.wait_until_admin_ready(service.admin).await;
    }

    /// Polls the readiness probe on the admin listener `admin` until it answers 200.
    pub async fn wait_until_admin_ready(&self, admin: SocketAddr) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let url = format!("https://127.0.0.1:{}/admin/v1/readyz", admin.port());
        loop {
            let ready = self.customer.get(&url).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{admin} never became ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An access token for `customer` from this world's issuer (every scope, an hour).
    pub fn token(&self, customer: &str) -> String {
        self.issuer.token(customer)
    }

    /// The customer a request acts as: the owner of an order, hold or payment the URL names
    /// (as this world's helpers recorded it), else the body's `customer_id`, else c_alice.
    fn acting_customer(&self, url: &str, body: Option<&Value>) -> String {
        let owners = self.owners.lock();
        let path = url.split('?').next().unwrap_or(url);
        let owner = path
            .split('/')
            .find_map(|segment| owners.get(segment).cloned());
        owner
            .or_else(|| {
                body.and_then(|b| b["customer_id"].as_str())
                    .filter(|id| ctr_service_kit::CustomerId::parse(id).is_ok())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "c_alice".to_owned())
    }

    /// Records who owns what an answer created (an order, a hold).
    fn record_owner(&self, body: &Value) {
        let Some(customer) = body["customer_id"].as_str() else {
            return;
        };
        // A hold answers its order's id too; the order was recorded when it was opened.
        let id = body["jti"]
            .as_str()
            .or(body["order_processing_id"].as_str());
        if let Some(id) = id {
            self.owners
                .lock()
                .insert(id.to_owned(), customer.to_owned());
        }
    }

    /// POSTs `body` as the acting customer (see [`Self::acting_customer`]).
    pub async fn post(&self, url: String, body: Value) -> (u16, Value) {
        let token = self.token(&self.acting_customer(&url, Some(&body)));
        self.post_with(Some(&token), url, body).await
    }

    /// GETs `url` as the acting customer.
    pub async fn get(&self, url: String) -> (u16, Value) {
        let token = self.token(&self.acting_customer(&url, None));
        self.get_with(Some(&token), url).await
    }

    /// POSTs `body` with `token` as the bearer token (none: no Authorization header).
    pub async fn post_with(&self, token: Option<&str>, url: String, body: Value) -> (u16, Value) {
        let request = self.anonymous().post(url).json(&body);
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let answer = self.posted(request).await;
        (answer.status, answer.body)
    }

    /// POSTs `body` as the acting customer under `Idempotency-Key: "<key>"`.
    pub async fn post_keyed(&self, url: String, body: Value, key: &str) -> Keyed {
        let token = self.token(&self.acting_customer(&url, Some(&body)));
        self.post_keyed_with(&token, url, body, key).await
    }

    /// POSTs `body` with `token` as the bearer token under `Idempotency-Key: "<key>"`.
    pub async fn post_keyed_with(&self, token: &str, url: String, body: Value, key: &str) -> Keyed {
        let request = self
            .anonymous()
            .post(url)
            .bearer_auth(token)
            .header("idempotency-key", idempotency_key(key))
            .json(&body);
        self.posted(request).await
    }

    /// The answer to a POST; the owner of what it created (201) is recorded.
    async fn posted(&self, request: reqwest::RequestBuilder) -> Keyed {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let replayed = header("idempotent-replayed").as_deref() == Some("true");
        let location = header("location");
        let body = response.json().await.unwrap_or(Value::Null);
        if status == 201 {
            self.record_owner(&body);
        }
        Keyed {
            status,
            body,
            replayed,
            location,
        }
    }

    /// How many orders `customer` has at the relay, whatever their state.
    pub async fn orders_of(&self, customer: &str) -> i64 {
        let (n,): (i64,) = self
            .relay_state
            .orders
            .store()
            .fetch_one(
                ctr_store::query_as("SELECT COUNT(*) FROM orders WHERE customer_id = $1")
                    .bind(customer),
            )
            .await
            .unwrap();
        n
    }

    /// GETs `url` with `token` as the bearer token (none: no Authorization header).
    pub async fn get_with(&self, token: Option<&str>, url: String) -> (u16, Value) {
        let request = self.anonymous().get(url);
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Rows that any customer request could have written, across the four stores: orders,
    /// checkout steps and consumed tokens at the relay, holds in each domain.
    pub async fn customer_rows(&self) -> Vec<i64> {
        use ctr_store::query_as;
        let mut counts = Vec::new();
        let relay = self.relay_state.orders.store();
        for table in ["orders", "checkout_steps", "replay"] {
            let (n,): (i64,) = relay
                .fetch_one(query_as(format!("SELECT COUNT(*) FROM {table}")))
                .await
                .unwrap();
            counts.push(n);
        }
        for store in [
            self.coupons.state.engine.store(),
            self.points.state.engine.store(),
            self.payments.state.engine.store(),
        ] {
            let (n,): (i64,) = store
                .fetch_one(query_as("SELECT COUNT(*) FROM holds"))
                .await
                .unwrap();
            counts.push(n);
        }
        counts
    }

    /// A client with no credential at all.
    pub fn anonymous(&self) -> reqwest::Client {
        self.anonymous.clone()
    }

    /// Opens an order and answers its id.
    pub async fn open_order(&self, customer: &str, amount: u64) -> String {
        self.open_order_at(&self.relay.url("/service/v1/orders"), customer, amount)
            .await
    }

    /// Opens an order through the orders endpoint `orders` (another relay's) and answers its
    /// id.
    pub async fn open_order_at(&self, orders: &str, customer: &str, amount: u64) -> String {
        let (status, body) = self
            .post(
                orders.to_owned(),
                json!({"customer_id": customer, "total": {"amount": amount, "currency": "EUR"}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["order_processing_id"].as_str().unwrap().to_owned()
    }

    /// A new 49.99 order of c_alice at the relay whose public base URL is `relay`, checked
    /// out there with coupon, points and a card `method`: the order and the answer.
    pub async fn check_out_at(&self, relay: &str, method: &str) -> (String, u16, Value) {
        let order = self
            .open_order_at(&format!("{relay}/service/v1/orders"), "c_alice", 4999)
            .await;
        let tokens = self.three_tokens(&order, "c_alice", method).await;
        let (status, body) = self
            .post(
                format!("{relay}/service/v1/orders/{order}/checkout"),
                json!({"tokens": tokens}),
            )
            .await;
        (order, status, body)
    }

    /// `settings` made quick to compensate (calls of 200 ms without retries, recovery every
    /// 100 ms, retries at most 1 s apart, attention after 1 s), and a copy of them through which
    /// a checkout fails (payments' capture never answers) and its compensation is retried past
    /// CTR_COMPENSATION_ATTENTION_AFTER (points' cancellations go to a route that does not
    /// exist: a 404, which is no refusal for good). Answers (quick, misrouted).
    pub async fn misrouted_compensation(
        &self,
        mut settings: RelaySettings,
    ) -> (RelaySettings, RelaySettings) {
        let payments_down = blackhole().await;
        settings.call_timeout = Duration::from_millis(200);
        settings.call_retries = 0;
        settings.recovery_interval = Duration::from_millis(100);
        settings.compensation_retry_max = Duration::from_secs(1);
        settings.compensation_attention_after = Duration::from_secs(1);
        let mut misrouted = settings.clone();
        misrouted.issuers.get_mut("payments").unwrap().redeem_url =
            format!("https://127.0.0.1:{payments_down}/service/v1/payments/redemptions");
        misrouted.issuers.get_mut("points").unwrap().cancel_url =
            self.points.running.url("/service/v2/points/cancellations");
        (settings, misrouted)
    }

    /// The server config of a relay under test beside this world's relay: the relay's
    /// identity, a store of its own (which a second relay may share), a port of its own.
    pub async fn relay_under_test(&self) -> ctr_service_kit::ServerConfig {
        ctr_service_kit::ServerConfig {
            store_url: fresh_store(&self.pki, "relay-under-test").await,
            ..self.pki.server_config("order-processing")
        }
    }

    /// The OpenMetrics text at `url` (an admin listener's `/admin/v1/metrics`).
    pub async fn metrics_text(&self, url: &str) -> String {
        self.customer
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn confirm_coupon(
        &self,
        order: &str,
        customer: &str,
        code: &str,
        total: u64,
    ) -> (u16, Value) {
        let body = json!({"order_processing_id": order, "customer_id": customer, "coupon_code": code,
                          "order_total": {"amount": total, "currency": "EUR"}});
        self.post(
            self.coupons
                .running
                .url("/service/v1/coupons/confirmations"),
            body,
        )
        .await
    }

    pub async fn confirm_points(&self, order: &str, customer: &str, points: u64) -> (u16, Value) {
        self.confirm_points_in(order, customer, points, "EUR").await
    }

    /// Holds `points` of `customer` to pay in `currency`.
    pub async fn confirm_points_in(
        &self,
        order: &str,
        customer: &str,
        points: u64,
        currency: &str,
    ) -> (u16, Value) {
        let body = json!({"order_processing_id": order, "customer_id": customer, "points": points,
                          "currency": currency});
        self.post(
            self.points.running.url("/service/v1/points/confirmations"),
            body,
        )
        .await
    }

    pub async fn confirm_payment(
        &self,
        order: &str,
        customer: &str,
        method: &str,
        amount: u64,
    ) -> (u16, Value) {
        let body = json!({"order_processing_id": order, "customer_id": customer, "payment_method_id": method,
                          "amount": {"amount": amount, "currency": "EUR"}});
        self.post(
            self.payments
                .running
                .url("/service/v1/payments/confirmations"),
            body,
        )
        .await
    }

    /// Confirms coupon, points and payment that settle a 49.99 EUR `order` exactly (SPRING10
    /// takes 5.00, 500 points pay 5.00, the card pays 39.99) and answers the three tokens.
    pub async fn three_tokens(&self, order: &str, customer: &str, method: &str) -> Vec<String> {
        let coupon = self.confirm_coupon(order, customer, "SPRING10", 4999).await;
        assert_eq!(coupon.0, 201, "{}", coupon.1);
        let points = self.confirm_points(order, customer, 500).await;
        assert_eq!(points.0, 201, "{}", points.1);
        let payment = self.confirm_payment(order, customer, method, 3999).await;
        assert_eq!(payment.0, 201, "{}", payment.1);
        [coupon.1, points.1, payment.1]
            .iter()
            .map(|b| b["token"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn checkout(&self, order: &str, tokens: &[String]) -> (u16, Value) {
        self.post(
            self.relay
                .url(&format!("/service/v1/orders/{order}/checkout")),
            json!({"tokens": tokens}),
        )
        .await
    }

    /// A client presenting the relay's certificate, to call the consumer endpoints directly.
    pub fn as_relay(&self) -> reqwest::Client {
        self.pki.client(Some("order-processing"))
    }

    pub async fn post_as(
        &self,
        client: &reqwest::Client,
        url: String,
        body: Value,
    ) -> (u16, Value) {
        let response = client.post(url).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls the order at `order_url` until its checkout has ended (not `checking_out`, no
    /// compensation pending), at most 15 s; answers the order.
    pub async fn ended(&self, order_url: String) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (_, view) = self.get(order_url.clone()).await;
            if view["status"] != "checking_out" && view["compensation_pending"] == false {
                return view;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the checkout never ended: {view}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Of concurrent checkouts of `three_tokens` for `c_alice`, exactly one completed, every
    /// other one was refused as in progress or no longer open, and the effects happened once.
    pub async fn assert_one_checkout_won(&self, results: &[(u16, Value)]) {
        let completed = results.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(completed, 1, "{results:?}");
        for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
            assert_eq!(*status, 409, "{body}");
            assert!(
                ["checkout-in-progress", "order-not-open"].contains(&problem_type(body)),
                "{body}"
            );
        }
        let balance = self.balance("c_alice").await;
        assert_eq!(
            (balance["available"].as_u64(), balance["spent"].as_u64()),
            (Some(4500), Some(500))
        );
        assert_eq!(self.coupon("SPRING10").await["uses"], 1);
    }

    /// The payment's status as payments shows it (`captured`, `voided`, ...).
    pub async fn payment_status(&self, jti: &str) -> Value {
        self.get(
            self.payments
                .running
                .url(&format!("/service/v1/payments/{jti}")),
        )
        .await
        .1["status"]
            .clone()
    }

    /// `customer`'s points, read as `customer`.
    pub async fn balance(&self, customer: &str) -> Value {
        self.get_with(
            Some(&self.token(customer)),
            self.points
                .running
                .url(&format!("/service/v1/points/{customer}")),
        )
        .await
        .1
    }

    pub async fn coupon(&self, code: &str) -> Value {
        self.get(
            self.coupons
                .running
                .url(&format!("/service/v1/coupons/{code}")),
        )
        .await
        .1
    }
}

/// The issuer registry pointing at `world`'s domains as they run (whatever a test changed in
/// its relay's settings).
pub fn issuers_of(world: &World) -> BTreeMap<String, IssuerEntry> {
    issuer_registry(
        world.coupons.running.public,
        world.points.running.public,
        world.payments.running.public,
    )
}

/// The relay's registry of the three domains listening on these addresses.
fn issuer_registry(
    coupons: SocketAddr,
    points: SocketAddr,
    payments: SocketAddr,
) -> BTreeMap<String, IssuerEntry> {
    [
        ("coupons", "coupons:redeem", coupons),
        ("points", "points:redeem", points),
        ("payments", "payments:capture", payments),
    ]
    .into_iter()
    .map(|(name, capability, addr)| {
        (
            name.to_owned(),
            IssuerEntry::at(
                &format!("https://127.0.0.1:{}", addr.port()),
                name,
                capability,
            ),
        )
    })
    .collect()
}

/// The outcome of each of an order view's tokens, in redemption order.
pub fn outcomes(view: &Value) -> Vec<&str> {
    view["tokens"]
        .as_array()
        .map(|tokens| {
            tokens
                .iter()
                .map(|t| t["outcome"].as_str().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// The slug of a problem+json answer's `type`.
/// The Python with Authlib the interop tests run (`CTR_TEST_AUTHLIB_PYTHON`, made by
/// `tests/oidc/setup.sh`), or `None` outside CI, having said that `what` did not run. Under
/// `CI=true` a missing interpreter fails the test: CI cannot skip it.
pub fn authlib_python(what: &str) -> Option<std::ffi::OsString> {
    let python = std::env::var_os("CTR_TEST_AUTHLIB_PYTHON");
    if python.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run {what}: set CTR_TEST_AUTHLIB_PYTHON=$(tests/oidc/setup.sh)"
        );
        eprintln!("NOT RUN: set CTR_TEST_AUTHLIB_PYTHON=$(tests/oidc/setup.sh) to run {what}");
    }
    python
}

pub fn problem_type(body: &Value) -> &str {
    body["type"]
        .as_str()
        .unwrap_or("")
        .trim_start_matches("https://ctr.dev/problems/")
}

/// A listener on 127.0.0.1 that accepts connections and never speaks, as a hanging domain
/// does; answers its port. It lives until the test's runtime ends.
pub async fn blackhole() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    port
}
