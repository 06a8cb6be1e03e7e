//! The ctr images on a private Docker network, started with testcontainers: `pki-init` first,
//! then the three domains, then the relay, each addressed by its container name. Tests talk to
//! the published ports with a client that trusts only the root CA `pki-init` exported.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test harness fails loudly"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use testcontainers::core::wait::ExitWaitStrategy;
use testcontainers::core::{AccessMode, Host, IntoContainerPort, Mount, WaitFor};

pub mod otlp;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

pub const DOMAINS: [&str; 3] = ["coupons", "points", "payments"];
/// The services a checkout crosses (one trace spans them all).
pub const CHECKOUT_SERVICES: [&str; 4] = ["order-processing", "coupons", "points", "payments"];
/// Every container of a stack besides pki-init.
pub const SERVICES: [&str; 6] = [
    "order-processing",
    "coupons",
    "points",
    "payments",
    "dev-issuer",
    "receiver",
];
/// The development issuer's demo client secret (compose's default).
pub const DEMO_SECRET: &str = "demo-secret";

fn tag() -> String {
    std::env::var("CTR_IMAGE_TAG").unwrap_or_else(|_| "dev".into())
}

/// The repository's root (compose.yaml, README.md, the guide).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `docker compose` (v2), or compose v1's `docker-compose` where the plugin is missing, run
/// from the repository's root.
pub fn compose() -> Command {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut command = if v2 {
        let mut command = Command::new("docker");
        command.arg("compose");
        command
    } else {
        Command::new("docker-compose")
    };
    command.current_dir(repo_root());
    command
}

/// Builds the images with deployments/docker/build-images.sh unless they all exist.
pub fn ensure_images() {
    let missing = [
        "pki",
        "order-processing",
        "coupons",
        "points",
        "payments",
        "dev-issuer",
        "cli",
    ]
    .iter()
    .any(|name| {
        let image = format!("ctr/{name}:{}", tag());
        !Command::new("docker")
            .args(["image", "inspect", &image])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if missing {
        let status = Command::new(repo_root().join("deployments/docker/build-images.sh"))
            .status()
            .unwrap();
        assert!(status.success(), "building the images failed");
    }
}

/// A client-credentials access token for `customer` from the issuer at `issuer`.
pub async fn token_from(client: &reqwest::Client, issuer: &str, customer: &str) -> String {
    ctr_access::client_credentials(
        client,
        &format!("{issuer}/token"),
        customer,
        DEMO_SECRET,
        None,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("no access token for {customer}: {e}"))
}

/// Removes a run's containers and volumes even when a test panics.
struct Cleanup {
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .arg("rm")
            .arg("-f")
            .args(&self.containers)
            .output();
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f"])
            .args(&self.volumes)
            .output();
    }
}

/// The pki-init container of a stack, to run again.
struct PkiInit {
    network: String,
    volume: String,
    export: PathBuf,
    args: Vec<String>,
}

impl PkiInit {
    fn request(&self) -> testcontainers::ContainerRequest<GenericImage> {
        let mut pki = GenericImage::new("ctr/pki", &tag())
            .with_wait_for(WaitFor::exit(ExitWaitStrategy::new().with_exit_code(0)))
            .with_user("0:0")
            .with_network(&self.network)
            .with_mount(Mount::volume_mount(&self.volume, "/pki"))
            .with_mount(Mount::bind_mount(self.export.to_string_lossy(), "/export"));
        for service in SERVICES {
            pki = pki.with_mount(Mount::volume_mount(
                format!("{}-{service}", self.volume),
                format!("/deliver/{service}"),
            ));
        }
        pki.with_cmd(self.args.clone())
    }
}

pub struct Stack {
    pub id: String,
    pki_init: PkiInit,
    _export: tempfile::TempDir,
    pub root: PathBuf,
    pub relay: ContainerAsync<GenericImage>,
    pub domains: Vec<(String, ContainerAsync<GenericImage>)>,
    /// `ctr listen`, the relay's webhook endpoint (compose's `receiver`).
    pub receiver: ContainerAsync<GenericImage>,
    /// The development issuer the services trust for customers' access tokens.
    pub issuer: ContainerAsync<GenericImage>,
    /// Trusts the root CA; sends c_alice's access token unless a request carries another.
    pub client: reqwest::Client,
    /// Trusts the root CA and sends no credential.
    pub anonymous: reqwest::Client,
    // Last, so that it runs after the containers' own drop.
    _cleanup: Cleanup,
}

fn container_name(id: &str, service: &str) -> String {
    format!("ctr-e2e-{id}-{service}")
}

fn service_image(name: &str) -> GenericImage {
    GenericImage::new(format!("ctr/{name}"), tag())
        .with_exposed_port(8443.tcp())
        .with_wait_for(WaitFor::healthcheck())
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts the stack with `env` set in every service (the host is `host.docker.internal`
    /// in each, for a receiver the test runs).
    pub async fn start_with(env: &[(&str, String)]) -> Self {
        Self::start_tuned(env, &[], &[]).await
    }

    /// The stack with every per-customer limit lifted (rate, open orders, holds), for tests
    /// that drive a few customers hard; `relay_env` adds settings of the relay's own.
    pub async fn start_unlimited(relay_env: &[(&str, &str)]) -> Self {
        let rates = [
            ("CTR_CUSTOMER_RATE", "100000".to_owned()),
            ("CTR_CUSTOMER_BURST", "100000".to_owned()),
        ];
        let mut relay = vec![("CTR_MAX_OPEN_ORDERS_PER_CUSTOMER", "100000")];
        relay.extend_from_slice(relay_env);
        Self::start_tuned(&rates, &relay, &[("CTR_MAX_HOLDS_PER_CUSTOMER", "100000")]).await
    }

    /// As [`Self::start_with`], with settings of the relay's own (`relay_env`) and of the
    /// domains' own (`domain_env`): each service refuses a setting it does not know.
    pub async fn start_tuned(
        env: &[(&str, String)],
        relay_env: &[(&str, &str)],
        domain_env: &[(&str, &str)],
    ) -> Self {
        ensure_images();
        let id = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
        let network = format!("ctr-e2e-{id}");
        let volume = format!("ctr-e2e-{id}-pki");
        let export = tempfile::tempdir().unwrap();

        let mut init = vec![
            "init".to_owned(),
            "--out=/pki".into(),
            "--chown=10001:10001".into(),
            "--export-root=/export/root.pem".into(),
        ];
        for service in SERVICES {
            init.push(format!(
                "--service={service}={}",
                container_name(&id, service)
            ));
        }
        init.push("--client=order-processing".into());
        init.push("--webhook-secret=receiver=order-processing,receiver".into());
        // As compose does: the whole PKI stays in pki-init's volume; each service's own volume
        // gets the trust anchors and its own keys.
        let share = |service: &str| format!("{volume}-{service}");
        for service in SERVICES {
            init.push(format!("--deliver={service}=/deliver/{service}"));
        }
        let pki_init = PkiInit {
            network: network.clone(),
            volume: volume.clone(),
            export: export.path().to_owned(),
            args: init,
        };
        drop(
            pki_init
                .request()
                .start()
                .await
                .expect("pki-init runs to completion"),
        );

        let pki_mount = |service: &str| {
            Mount::volume_mount(share(service), "/pki").with_access_mode(AccessMode::ReadOnly)
        };
        let with_env = |mut image: testcontainers::ContainerRequest<GenericImage>| {
            image = image.with_host("host.docker.internal", Host::HostGateway);
            for (key, value) in env {
                image = image.with_env_var(*key, value);
            }
            image
        };
        let issuer_url = format!("https://{}:8443", container_name(&id, "dev-issuer"));
        let issuer = with_env(service_image("dev-issuer").with_network(&network))
            .with_container_name(container_name(&id, "dev-issuer"))
            .with_mount(pki_mount("dev-issuer"))
            .with_env_var("CTR_LOG_FORMAT", "json")
            .with_env_var("CTR_DEV_ISSUER_URL", &issuer_url)
            .with_startup_timeout(Duration::from_secs(60))
            .start()
            .await
            .expect("the dev issuer starts healthy");
        let with_env = |image: testcontainers::ContainerRequest<GenericImage>| {
            with_env(image)
                .with_env_var("CTR_AUTH_ISSUER", &issuer_url)
                .with_env_var("CTR_AUTH_CA_FILE", "/pki/root.pem")
        };
        let mut domains = Vec::new();
        for domain in DOMAINS {
            let container = with_env(service_image(domain).with_network(&network))
                .with_container_name(container_name(&id, domain))
                .with_mount(pki_mount(domain))
                .with_env_var("CTR_LOG_FORMAT", "json")
                .with_env_var("CTR_KMS__BACKEND", "mock")
                .with_startup_timeout(Duration::from_secs(60));
            let container = domain_env
                .iter()
                .fold(container, |c, (key, value)| c.with_env_var(*key, *value))
                .start()
                .await
                .unwrap_or_else(|e| panic!("{domain} starts healthy: {e}"));
            domains.push((domain.to_owned(), container));
        }
        let receiver = GenericImage::new("ctr/cli", &tag())
            .with_exposed_port(8443.tcp())
            .with_wait_for(WaitFor::message_on_stderr("listening for order events"))
            .with_network(&network)
            .with_container_name(container_name(&id, "receiver"))
            .with_mount(pki_mount("receiver"))
            .with_env_var("CTR_CA", "/pki/root.pem")
            .with_cmd([
                "listen",
                "--addr=0.0.0.0:8443",
                "--cert=/pki/receiver/server.pem",
                "--key=/pki/receiver/server.key",
                "--secret-file=/pki/receiver/webhook-receiver.key",
            ])
            .start()
            .await
            .expect("the receiver starts");
        let mut relay = with_env(service_image("order-processing").with_network(&network))
            .with_container_name(container_name(&id, "order-processing"))
            .with_mount(pki_mount("order-processing"))
            .with_env_var("CTR_LOG_FORMAT", "json")
            .with_env_var("CTR_CALL_TIMEOUT", "2s")
            // A saga whose relay died is taken over quickly (a lease outlives two calls with
            // their retries, 2 x 6 s here), and a hanging checkout answers 202 soon.
            .with_env_var("CTR_SAGA_LEASE", "13s")
            .with_env_var("CTR_RECOVERY_INTERVAL", "1s")
            .with_env_var("CTR_CHECKOUT_DEADLINE", "3s")
            // Its events go to the receiver, as compose's do; a delivery cut off is tried
            // again within seconds.
            .with_env_var(
                "CTR_WEBHOOKS__RECEIVER__URL",
                format!("https://{}:8443/webhooks", container_name(&id, "receiver")),
            )
            .with_env_var(
                "CTR_WEBHOOKS__RECEIVER__SECRET_FILE",
                "/pki/order-processing/webhook-receiver.key",
            )
            .with_env_var("CTR_WEBHOOKS__RECEIVER__ALLOW_PRIVATE", "true")
            .with_env_var("CTR_WEBHOOK_TIMEOUT", "3s")
            .with_env_var("CTR_WEBHOOK_RETRY_FIRST", "500ms")
            .with_env_var("CTR_WEBHOOK_RETRY_MAX", "2s")
            .with_startup_timeout(Duration::from_secs(60));
        for domain in DOMAINS {
            let base = format!("https://{}:8443", container_name(&id, domain));
            let key = domain.to_uppercase();
            relay = relay
                .with_env_var(
                    format!("CTR_ISSUERS__{key}__JWKS_URL"),
                    format!("{base}/.well-known/jwks.json"),
                )
                .with_env_var(
                    format!("CTR_ISSUERS__{key}__REDEEM_URL"),
                    format!("{base}/service/v1/{domain}/redemptions"),
                )
                .with_env_var(
                    format!("CTR_ISSUERS__{key}__CANCEL_URL"),
                    format!("{base}/service/v1/{domain}/cancellations"),
                );
        }
        for (key, value) in relay_env {
            relay = relay.with_env_var(*key, *value);
        }
        let relay = relay.start().await.expect("the relay starts healthy");
        let root = export.path().join("root.pem");
        let anonymous = ctr_pki::reqwest_builder(&root, None)
            .unwrap()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let alice = token_from(&anonymous, &Self::base(&issuer).await, "c_alice").await;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {alice}").parse().unwrap(),
        );
        let client = ctr_pki::reqwest_builder(&root, None)
            .unwrap()
            .timeout(Duration::from_secs(30))
            .default_headers(headers)
            .build()
            .unwrap();
        let containers = SERVICES.map(|s| container_name(&id, s)).to_vec();
        let mut volumes = SERVICES.map(share).to_vec();
        volumes.push(volume);
        let _cleanup = Cleanup {
            containers,
            volumes,
        };
        Self {
            id,
            pki_init,
            _cleanup,
            _export: export,
            root,
            relay,
            domains,
            receiver,
            issuer,
            client,
            anonymous,
        }
    }

    /// The events the receiver verified (each once), as `(webhook id, type, order)`.
    pub async fn received_events(&self) -> Vec<(String, String, String)> {
        let url = format!("{}/events", Self::base(&self.receiver).await);
        let (status, body) = self.get(url).await;
        assert_eq!(status, 200, "{body}");
        body.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (
                    text(&r["webhook_id"]),
                    text(&r["event"]["type"]),
                    text(&r["event"]["data"]["order_processing_id"]),
                )
            })
            .collect()
    }

    /// Runs pki-init again on the running stack with `env` (`CTR_PKI_RENEW_ALL=true` renews
    /// every leaf), as `docker compose run --rm pki-init` does; answers what it printed.
    pub async fn run_pki_init(&self, env: &[(&str, &str)]) -> String {
        let request = env.iter().fold(self.pki_init.request(), |r, (key, value)| {
            r.with_env_var(*key, *value)
        });
        let container = request.start().await.expect("pki-init runs to completion");
        let out = container.stdout_to_vec().await.unwrap_or_default();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The certificate (DER) a new TLS handshake with `container`'s public
    /// port is served (as a client trusting the stack's root sees it).
    pub async fn served_certificate(&self, container: &ContainerAsync<GenericImage>) -> Vec<u8> {
        let port = container.get_host_port_ipv4(8443).await.unwrap();
        let config = ctr_pki::client_config(&self.root, None).unwrap();
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(
                rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(),
                stream,
            )
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0]
            .as_ref()
            .to_vec()
    }

    /// An access token for `customer` from the stack's development issuer (client
    /// credentials over its published port).
    pub async fn token(&self, customer: &str) -> String {
        token_from(&self.anonymous, &Self::base(&self.issuer).await, customer).await
    }

    /// The stack's Docker network (`ctr-e2e-<id>`); services are `container_name(service)` on it.
    pub fn network(&self) -> String {
        format!("ctr-e2e-{}", self.id)
    }

    pub fn container_name(&self, service: &str) -> String {
        container_name(&self.id, service)
    }

    /// Runs the `ctr` client image on the stack's network with `args`, trusting the stack's
    /// root CA: answers its exit code, stdout and stderr.
    pub fn ctr(&self, args: &[&str]) -> (i32, String, String) {
        let mut command = Command::new("docker");
        command
            .args(["run", "--rm", "--network", &self.network()])
            .args([
                "-v".to_owned(),
                format!("{}:/ca/root.pem:ro", self.root.display()),
                "-e".into(),
                "CTR_CA=/ca/root.pem".into(),
            ]);
        for (variable, service) in [
            ("CTR_RELAY_URL", "order-processing"),
            ("CTR_COUPONS_URL", "coupons"),
            ("CTR_POINTS_URL", "points"),
            ("CTR_PAYMENTS_URL", "payments"),
            ("CTR_ISSUER_URL", "dev-issuer"),
        ] {
            command.args([
                "-e".to_owned(),
                format!("{variable}=https://{}:8443", self.container_name(service)),
            ]);
        }
        command.args([
            "-e".to_owned(),
            format!(
                "CTR_EVENTS_URL=https://{}:8443/events",
                self.container_name("receiver")
            ),
        ]);
        let out = command
            .arg(format!("ctr/cli:{}", tag()))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn domain(&self, name: &str) -> &ContainerAsync<GenericImage> {
        &self.domains.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// `https://127.0.0.1:<published port>` of a container.
    pub async fn base(container: &ContainerAsync<GenericImage>) -> String {
        format!(
            "https://127.0.0.1:{}",
            container.get_host_port_ipv4(8443).await.unwrap()
        )
    }

    pub async fn relay_url(&self, path: &str) -> String {
        format!("{}{path}", Self::base(&self.relay).await)
    }

    pub async fn domain_url(&self, domain: &str, path: &str) -> String {
        format!("{}{path}", Self::base(self.domain(domain)).await)
    }

    pub async fn post(&self, url: String, body: Value) -> (u16, Value) {
        let response = self.client.post(url).json(&body).send().await.unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    pub async fn get(&self, url: String) -> (u16, Value) {
        let response = self.client.get(url).send().await.unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Docker's view of a container's health check (which runs `/service healthcheck`).
    pub fn health(container: &ContainerAsync<GenericImage>) -> String {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Health.Status}}", container.id()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Polls Docker until the container reports healthy (at most 60 s).
    pub async fn wait_healthy(container: &ContainerAsync<GenericImage>) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while Self::health(container) != "healthy" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never became healthy",
                container.id()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn open_order(&self, customer: &str, amount: u64) -> String {
        let (status, body) = self
            .post(
                self.relay_url("/service/v1/orders").await,
                json!({"customer_id": customer, "total": {"amount": amount, "currency": "EUR"}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["order_processing_id"].as_str().unwrap().to_owned()
    }

    /// Coupon SPRING10 (5.00), 500 points (5.00) and 39.99 paid with `method`: the README's curl checkout
    /// walkthrough, settling a 49.99 EUR order exactly.
    pub async fn three_tokens(&self, order: &str, customer: &str, method: &str) -> Vec<String> {
        let requests = [
            (
                "coupons",
                json!({"order_processing_id": order, "customer_id": customer, "coupon_code": "SPRING10", "order_total": {"amount": 4999, "currency": "EUR"}}),
            ),
            (
                "points",
                json!({"order_processing_id": order, "customer_id": customer, "points": 500, "currency": "EUR"}),
            ),
            (
                "payments",
                json!({"order_processing_id": order, "customer_id": customer, "payment_method_id": method, "amount": {"amount": 3999, "currency": "EUR"}}),
            ),
        ];
        let mut tokens = Vec::new();
        for (domain, body) in requests {
            let (status, answer) = self
                .post(
                    self.domain_url(domain, &format!("/service/v1/{domain}/confirmations"))
                        .await,
                    body,
                )
                .await;
            assert_eq!(status, 201, "{domain}: {answer}");
            tokens.push(answer["token"].as_str().unwrap().to_owned());
        }
        tokens
    }

    pub async fn checkout(&self, order: &str, tokens: &[String]) -> (u16, Value) {
        self.post(
            self.relay_url(&format!("/service/v1/orders/{order}/checkout"))
                .await,
            json!({"tokens": tokens}),
        )
        .await
    }

    /// Every file a running container sees under `dir`, read with `docker cp` (the images
    /// have no shell), relative to `dir`, sorted.
    pub fn files_in(container: &ContainerAsync<GenericImage>, dir: &str) -> Vec<String> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("docker cp {}:{dir}/. - | tar -t", container.id()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker cp: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut files: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_start_matches("./").to_owned())
            .filter(|l| !l.is_empty() && !l.ends_with('/'))
            .collect();
        files.sort();
        files
    }

    /// Runs `docker <verb> <container>` (pause, unpause, kill).
    pub fn docker(verb: &str, container: &ContainerAsync<GenericImage>) {
        let out = Command::new("docker")
            .args([verb, container.id()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The order as the relay shows it.
    pub async fn order(&self, order: &str) -> Value {
        self.get(self.relay_url(&format!("/service/v1/orders/{order}")).await)
            .await
            .1
    }

    pub async fn payment(&self, jti: &str) -> Value {
        self.get(
            self.domain_url("payments", &format!("/service/v1/payments/{jti}"))
                .await,
        )
        .await
        .1
    }

    pub async fn points(&self, customer: &str) -> Value {
        self.get(
            self.domain_url("points", &format!("/service/v1/points/{customer}"))
                .await,
        )
        .await
        .1
    }

    pub async fn coupon(&self, code: &str) -> Value {
        self.get(
            self.domain_url("coupons", &format!("/service/v1/coupons/{code}"))
                .await,
        )
        .await
        .1
    }
}
