//! Layered, typed configuration: compiled-in defaults, an optional TOML file named by
//! `CTR_CONFIG_FILE`, then `CTR_*` environment variables; validated before anything starts.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A configuration that could not be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration: {setting}: {reason}")]
    Setting {
        setting: &'static str,
        reason: String,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        // figment names the key and where it came from (e.g. "CTR_PUBLIC_ADDR environment variable").
        let messages: Vec<String> = error
            .into_iter()
            .map(|e| {
                let key = e.path.join("__").to_uppercase();
                let origin = e
                    .metadata
                    .as_ref()
                    .map(|m| m.name.to_string())
                    .unwrap_or_default();
                format!("CTR_{key} ({origin}): {}", e.kind)
            })
            .collect();
        Self::Invalid(messages.join("; "))
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON unless standard error is a terminal.
    Auto,
    Json,
    Text,
}

/// What every service needs to run: listeners, TLS files, limits, telemetry.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServerConfig {
    /// `CTR_PUBLIC_ADDR`: the public HTTPS listener (`/service/v1/...`).
    pub public_addr: SocketAddr,
    /// `CTR_ADMIN_ADDR`: the admin HTTPS listener; must be on 127.0.0.1.
    pub admin_addr: SocketAddr,
    /// `CTR_TLS_ROOT`: the root CA certificate every peer is verified against.
    pub tls_root: PathBuf,
    /// `CTR_TLS_CERT`: this service's certificate chain (leaf first).
    pub tls_cert: PathBuf,
    /// `CTR_TLS_KEY`: its PKCS#8 private key.
    pub tls_key: PathBuf,
    /// `CTR_TLS_RELOAD_INTERVAL`: how often the TLS files are read again; a change (a renewed
    /// certificate, key or root) is used from the next handshake on.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub tls_reload_interval: Duration,
    /// `CTR_TLS_EXPIRY_WINDOW`: readiness fails once a certificate in use expires within this
    /// long. Keep it well below the renewal window (cert-manager's `renewBefore`, pki-init's
    /// `CTR_PKI_RENEW_WITHIN`): it is what catches a renewal that did not happen.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub tls_expiry_window: Duration,
    /// `CTR_SHUTDOWN_DELAY`: on SIGTERM, how long the service keeps serving with readiness
    /// failing before its listeners stop accepting, so that an orchestrator takes it out of
    /// rotation first (Kubernetes: a few seconds; compose: none).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub shutdown_delay: Duration,
    /// `CTR_SHUTDOWN_GRACE`: how long in-flight requests may take to drain.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub shutdown_grace: Duration,
    /// `CTR_REQUEST_TIMEOUT`: the longest a request may take before it answers 503.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub request_timeout: Duration,
    /// `CTR_BODY_LIMIT_BYTES`: the largest request body accepted.
    pub body_limit_bytes: usize,
    /// `CTR_MAX_CONNECTIONS`: open connections per listener; one more is closed at once.
    pub max_connections: usize,
    /// `CTR_MAX_IN_FLIGHT`: requests the public listener works on at once; beyond it a request
    /// is answered 503 `overloaded` with `Retry-After` (load shedding) instead of queueing.
    pub max_in_flight: usize,
    /// `CTR_HEADER_READ_TIMEOUT`: the longest a TLS handshake, or a request's head, may take
    /// to arrive; also how long an HTTP/1 connection is kept alive without a next request.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub header_read_timeout: Duration,
    /// `CTR_IDLE_TIMEOUT`: a connection (HTTP/1 or HTTP/2) with no request in flight for this
    /// long is closed.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub idle_timeout: Duration,
    /// `CTR_HTTP2_MAX_STREAMS`: concurrent streams on one HTTP/2 connection.
    pub http2_max_streams: u32,
    /// `CTR_KEEP_ALIVE_INTERVAL`: how often an HTTP/2 connection is pinged.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub keep_alive_interval: Duration,
    /// `CTR_KEEP_ALIVE_TIMEOUT`: how long a peer may take to answer a ping before its
    /// connection is closed.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub keep_alive_timeout: Duration,
    /// `CTR_CUSTOMER_RATE`: requests per second one customer (told apart by its
    /// `customer_id`, not by its address: behind a proxy every client shares one) may make
    /// to the endpoints that create state, on average.
    pub customer_rate: u32,
    /// `CTR_CUSTOMER_BURST`: how many such requests one customer may make at once, above
    /// `CTR_CUSTOMER_RATE`.
    pub customer_burst: u32,
    /// `CTR_LOG`: a tracing filter such as `info` or `info,ctr=debug`.
    pub log: String,
    /// `CTR_LOG_FORMAT`: `auto`, `json` or `text`.
    pub log_format: LogFormat,
    /// `CTR_OTLP_ENDPOINT`: an OTLP/HTTP traces endpoint; traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    /// `CTR_METRICS_ADDR`: a third HTTPS listener serving only `GET /metrics` (Prometheus
    /// text), for a scraper on another host or container; off unless set. The admin listener
    /// stays on loopback. An empty value is unset.
    #[serde(deserialize_with = "empty_as_none")]
    pub metrics_addr: Option<SocketAddr>,
    /// `CTR_STORE_URL`: where the service keeps its state: an SQLite file (the default, on the
    /// container's `/data` volume) or `postgres://user:password@host/db` for replicas.
    pub store_url: String,
    /// `CTR_IDEMPOTENCY_REQUIRED`: every POST that creates something (an order, a hold, a
    /// checkout) must carry an `Idempotency-Key`; one without is refused (400). Off by
    /// default: a key is then optional.
    pub idempotency_required: bool,
    /// `CTR_IDEMPOTENCY_TTL`: how long a key and its answer are kept (on the database's
    /// clock); a hold's answer, which carries its token, no longer than the hold.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub idempotency_ttl: Duration,
    /// `CTR_AUTH_*`: the issuer of customers' access tokens and how they are checked.
    #[serde(flatten)]
    pub access: ctr_access::AccessSettings,
}

/// An optional address where an empty variable (compose's `${VAR:-}`) means none.
fn empty_as_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let value: Option<String> = serde::Deserialize::deserialize(deserializer)?;
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(addr) => addr.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("`{addr}` is not an address such as 0.0.0.0:9464"))
        }),
    }
}

impl ServerConfig {
    /// The defaults of service `name`: its certificates under `/pki/<name>/`, as compose mounts them.
    pub fn defaults(name: &str) -> Self {
        let pki = Path::new("/pki");
        Self {
            public_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8443),
            admin_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090),
            tls_root: pki.join("root.pem"),
            tls_cert: pki.join(name).join("server.pem"),
            tls_key: pki.join(name).join("server.key"),
            tls_reload_interval: Duration::from_secs(10),
            tls_expiry_window: Duration::from_secs(24 * 3600),
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            body_limit_bytes: 64 * 1024,
            max_connections: 1024,
            max_in_flight: 256,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            http2_max_streams: 64,
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(10),
            customer_rate: 5,
            customer_burst: 20,
            log: "info".into(),
            log_format: LogFormat::Auto,
            otlp_endpoint: None,
            metrics_addr: None,
            store_url: format!("sqlite:///data/{name}.db?mode=rwc"),
            idempotency_required: false,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            access: ctr_access::AccessSettings::default(),
        }
    }

    /// The OTLP endpoint, if one is set (an empty variable means none).
    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.otlp_endpoint
            .as_deref()
            .filter(|e| !e.trim().is_empty())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.admin_addr.ip() != IpAddr::V4(Ipv4Addr::LOCALHOST) {
            return Err(ConfigError::Setting {
                setting: "CTR_ADMIN_ADDR",
                reason: format!(
                    "{} is not on 127.0.0.1; the admin listener is private",
                    self.admin_addr
                ),
            });
        }
        if self.body_limit_bytes < 1024 {
            return Err(ConfigError::Setting {
                setting: "CTR_BODY_LIMIT_BYTES",
                reason: "must be at least 1024".into(),
            });
        }
        let zero = [
            ("CTR_SHUTDOWN_GRACE", self.shutdown_grace.is_zero()),
            (
                "CTR_TLS_RELOAD_INTERVAL",
                self.tls_reload_interval.is_zero(),
            ),
            ("CTR_REQUEST_TIMEOUT", self.request_timeout.is_zero()),
            ("CTR_MAX_CONNECTIONS", self.max_connections == 0),
            ("CTR_MAX_IN_FLIGHT", self.max_in_flight == 0),
            (
                "CTR_HEADER_READ_TIMEOUT",
                self.header_read_timeout.is_zero(),
            ),
            ("CTR_IDLE_TIMEOUT", self.idle_timeout.is_zero()),
            ("CTR_HTTP2_MAX_STREAMS", self.http2_max_streams == 0),
            (
                "CTR_KEEP_ALIVE_INTERVAL",
                self.keep_alive_interval.is_zero(),
            ),
            ("CTR_KEEP_ALIVE_TIMEOUT", self.keep_alive_timeout.is_zero()),
            ("CTR_CUSTOMER_RATE", self.customer_rate == 0),
            ("CTR_CUSTOMER_BURST", self.customer_burst == 0),
            (
                "CTR_IDEMPOTENCY_TTL",
                self.idempotency_ttl < Duration::from_secs(1),
            ),
        ];
        if let Some((setting, _)) = zero.into_iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::Setting {
                setting,
                reason: "must be more than zero".into(),
            });
        }
        if let Some(endpoint) = self.otlp_endpoint()
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ConfigError::Setting {
                setting: "CTR_OTLP_ENDPOINT",
                reason: format!("`{endpoint}` is not an http(s) URL"),
            });
        }
        Ok(())
    }
}

/// A service's own settings, read from the same sources as [`ServerConfig`].
pub trait ServiceSettings: Serialize + DeserializeOwned {
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// The two halves of a service's configuration.
#[derive(Debug, Clone)]
pub struct Config<S> {
    pub server: ServerConfig,
    pub service: S,
}

/// The sources, in order: defaults, `CTR_CONFIG_FILE` (TOML), `CTR_*` variables.
pub fn figment<S: Serialize>(server: &ServerConfig, service: &S) -> Figment {
    let mut figment = Figment::new()
        .merge(Serialized::defaults(server))
        .merge(Serialized::defaults(service));
    if let Ok(file) = std::env::var("CTR_CONFIG_FILE") {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment.merge(Env::prefixed("CTR_").ignore(&["CONFIG_FILE"]).split("__"))
}

impl<S: ServiceSettings> Config<S> {
    /// Loads and validates the configuration of service `name` from the process environment.
    /// A `CTR_*` variable or TOML key that names no setting is refused, naming it: a typo must
    /// not leave a default silently in force.
    pub fn load(name: &str, service_defaults: S) -> Result<Self, ConfigError> {
        let server = ServerConfig::defaults(name);
        let known = top_level_keys(&server)?
            .into_iter()
            .chain(top_level_keys(&service_defaults)?)
            .collect();
        Self::from_figment(figment(&server, &service_defaults), &known)
    }

    /// Extracts and validates both halves from `figment`, refusing a top-level key outside
    /// `known` (nested structures refuse theirs with `deny_unknown_fields`).
    pub fn from_figment(figment: Figment, known: &BTreeSet<String>) -> Result<Self, ConfigError> {
        refuse_unknown_keys(&figment, known)?;
        let server: ServerConfig = figment.extract()?;
        let service: S = figment.extract()?;
        server.validate()?;
        service.validate()?;
        Ok(Self { server, service })
    }
}

/// The top-level keys `value` serializes to: the settings it has.
fn top_level_keys(value: &impl Serialize) -> Result<Vec<String>, ConfigError> {
    match figment::value::Value::serialize(value) {
        Ok(figment::value::Value::Dict(_, dict)) => Ok(dict.into_keys().collect()),
        Ok(_) => Err(ConfigError::Invalid("settings must be a structure".into())),
        Err(e) => Err(ConfigError::Invalid(e.to_string())),
    }
}

fn refuse_unknown_keys(figment: &Figment, known: &BTreeSet<String>) -> Result<(), ConfigError> {
    let unknown: Vec<String> = figment
        .extract::<figment::value::Dict>()?
        .keys()
        .filter(|key| !known.contains(key.as_str()))
        .map(|key| match figment.find_metadata(key) {
            Some(m) if m.name.contains("environment") => {
                format!("CTR_{}", key.to_uppercase())
            }
            Some(m) => match &m.source {
                Some(source) => format!("`{key}` ({} {source})", m.name),
                None => format!("`{key}` ({})", m.name),
            },
            None => format!("`{key}`"),
        })
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ConfigError::Invalid(format!(
        "unknown setting{} {}: check the spelling against the configuration reference (docs/guide/src/operating/configuration-reference.md)",
        if unknown.len() > 1 { "s" } else { "" },
        unknown.join(", ")
    )))
}
