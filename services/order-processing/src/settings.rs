//! The relay's settings: the issuer registry and the checkout policy are configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use ctr_service_kit::{ConfigError, ServiceSettings};
use serde::{Deserialize, Serialize};

/// One issuing domain, as the relay knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerEntry {
    /// Where its public keys are (`GET`, HTTPS).
    pub jwks_url: String,
    /// Its redemption endpoint (`POST`, mTLS).
    pub redeem_url: String,
    /// Its cancellation endpoint (`POST`, mTLS).
    pub cancel_url: String,
    /// The capabilities it may grant; tokens carrying them are routed back to it.
    pub capabilities: Vec<String>,
}

impl IssuerEntry {
    /// The endpoints of a domain named `name` served at `base` (e.g. `https://coupons:8443`).
    pub fn at(base: &str, name: &str, capability: &str) -> Self {
        Self {
            jwks_url: format!("{base}/.well-known/jwks.json"),
            redeem_url: format!("{base}/service/v1/{name}/redemptions"),
            cancel_url: format!("{base}/service/v1/{name}/cancellations"),
            capabilities: vec![capability.to_owned()],
        }
    }
}

/// A receiver of order events (Standard Webhooks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// Where events are POSTed: `https://` only; redirects are not followed.
    pub url: String,
    /// A file of `whsec_...` secrets, one per line: every delivery is signed with each (two
    /// during a rotation). Read at every delivery, so a rotation needs no restart.
    pub secret_file: PathBuf,
    /// Whether the URL may resolve to a loopback or private address (a receiver inside the
    /// deployment). Off: such a target is refused at every connection.
    #[serde(default)]
    pub allow_private: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RelaySettings {
    /// `CTR_ISSUERS__<NAME>__{JWKS_URL,REDEEM_URL,CANCEL_URL,CAPABILITIES}`: the issuer registry.
    pub issuers: BTreeMap<String, IssuerEntry>,
    /// `CTR_REDEMPTION_ORDER`: the order capabilities are redeemed in (payment capture last).
    pub redemption_order: Vec<String>,
    /// `CTR_REQUIRED_CAPABILITIES`: what every checkout must present (default none: the
    /// settlement check already demands tokens that pay the whole total).
    pub required_capabilities: Vec<String>,
    /// `CTR_PRICED_CAPABILITIES`: tokens with these capabilities are discounts and must say the
    /// order total they were priced on (`priced_on`), which must be the order's.
    pub priced_capabilities: Vec<String>,
    /// `CTR_CLIENT_CERT`: the relay's mTLS client certificate chain, presented to the domains.
    pub client_cert: PathBuf,
    /// `CTR_CLIENT_KEY`: its PKCS#8 private key.
    pub client_key: PathBuf,
    /// `CTR_ORDER_TTL`: how long an order stays open for checkout.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub order_ttl: Duration,
    /// `CTR_TOKEN_LEEWAY`: clock skew tolerated on `nbf`, `iat`, `exp`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub token_leeway: Duration,
    /// `CTR_MAX_TOKEN_LIFETIME`: the longest `exp - iat` accepted.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub max_token_lifetime: Duration,
    /// `CTR_CALL_TIMEOUT`: the limit of one call to a domain.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub call_timeout: Duration,
    /// `CTR_CHECKOUT_DEADLINE`: how long a checkout request waits for the saga; after it the
    /// answer is 202 with the order's URL while redemption or compensation goes on.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub checkout_deadline: Duration,
    /// `CTR_SAGA_LEASE`: how long a relay's claim on a running checkout lasts without progress;
    /// after it, another relay's (or a restarted one's) recovery worker takes the checkout over.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub saga_lease: Duration,
    /// `CTR_CHECKOUT_BOUND`: the longest a checkout may keep redeeming; after it the order
    /// fails and is compensated.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub checkout_bound: Duration,
    /// `CTR_RECOVERY_INTERVAL`: how often the recovery worker looks for abandoned checkouts
    /// (and the janitor prunes retired orders and replay entries).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub recovery_interval: Duration,
    /// `CTR_RECOVERY_CONCURRENCY`: how many recovered checkouts one relay drives at once, and
    /// as many pending compensations beside them (so that no number of compensations delays a
    /// crashed checkout).
    pub recovery_concurrency: usize,
    /// `CTR_COMPENSATION_RETRY_MAX`: the longest wait between two tries of a compensation a
    /// domain did not complete (the wait doubles from about 1s, with jitter, up to this).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub compensation_retry_max: Duration,
    /// `CTR_COMPENSATION_ATTENTION_AFTER`: a compensation still retried after this long also
    /// marks its order as needing attention (retries go on; a success clears it).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub compensation_attention_after: Duration,
    /// `CTR_SAGA_GRACE`: at shutdown, how long running checkouts may take to finish before the
    /// process exits (what is left, recovery takes over).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub saga_grace: Duration,
    /// `CTR_CALL_RETRIES`: further attempts of an idempotent call after a transport error or 5xx.
    pub call_retries: u32,
    /// `CTR_JWKS_MAX_AGE`: cached keys older than this are refreshed before use.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub jwks_max_age: Duration,
    /// `CTR_JWKS_MIN_REFETCH`: at most one JWKS fetch per issuer per this interval.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub jwks_min_refetch: Duration,
    /// `CTR_MAX_TOKENS`: the most tokens one checkout may carry.
    pub max_tokens: usize,
    /// `CTR_ORDER_RETENTION`: how long an order stays readable after its checkout window.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub order_retention: Duration,
    /// `CTR_MAX_ORDERS`: the most orders kept at once; beyond it new orders are refused (503).
    pub max_orders: usize,
    /// `CTR_MAX_OPEN_ORDERS_PER_CUSTOMER`: open (not yet checked out, unexpired) orders one
    /// customer may have; one more is refused 429 `too-many-open-orders`.
    pub max_open_orders_per_customer: usize,
    /// `CTR_WEBHOOKS__<NAME>__{URL,SECRET_FILE,ALLOW_PRIVATE}`: where order events are
    /// delivered (none by default; the events are written all the same).
    pub webhooks: BTreeMap<String, WebhookEndpoint>,
    /// `CTR_WEBHOOK_TIMEOUT`: the limit of one delivery attempt, connection included.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub webhook_timeout: Duration,
    /// `CTR_WEBHOOK_RETRY_FIRST`: the wait before the first retry of a delivery; it doubles
    /// (with jitter) at each retry.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub webhook_retry_first: Duration,
    /// `CTR_WEBHOOK_RETRY_MAX`: the longest wait between two attempts.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub webhook_retry_max: Duration,
    /// `CTR_WEBHOOK_RETRY_FOR`: how long a delivery is retried before it is marked failed
    /// (an operator redelivers it: `POST /admin/v1/webhooks/redeliveries`).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub webhook_retry_for: Duration,
    /// `CTR_WEBHOOK_RETENTION`: how long delivered and failed deliveries, and their events,
    /// are kept after they ended.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String", extend("format" = "duration"))]
    pub webhook_retention: Duration,
    /// `CTR_WEBHOOK_CONCURRENCY`: how many delivery attempts one relay makes at once.
    pub webhook_concurrency: usize,
}

impl Default for RelaySettings {
    fn default() -> Self {
        let issuers = [
            ("coupons", "coupons:redeem"),
            ("points", "points:redeem"),
            ("payments", "payments:capture"),
        ]
        .into_iter()
        .map(|(name, capability)| {
            (
                name.to_owned(),
                IssuerEntry::at(&format!("https://{name}:8443"), name, capability),
            )
        })
        .collect();
        Self {
            issuers,
            redemption_order: vec![
                "coupons:redeem".into(),
                "points:redeem".into(),
                "payments:capture".into(),
            ],
            required_capabilities: Vec::new(),
            priced_capabilities: vec!["coupons:redeem".into()],
            client_cert: "/pki/order-processing/client.pem".into(),
            client_key: "/pki/order-processing/client.key".into(),
            order_ttl: Duration::from_secs(900),
            token_leeway: Duration::from_secs(5),
            max_token_lifetime: Duration::from_secs(300),
            call_timeout: Duration::from_secs(3),
            checkout_deadline: Duration::from_secs(10),
            saga_lease: Duration::from_secs(30),
            checkout_bound: Duration::from_secs(120),
            recovery_interval: Duration::from_secs(5),
            recovery_concurrency: 8,
            compensation_retry_max: Duration::from_secs(60),
            compensation_attention_after: Duration::from_secs(600),
            saga_grace: Duration::from_secs(15),
            call_retries: 2,
            jwks_max_age: Duration::from_secs(300),
            jwks_min_refetch: Duration::from_secs(5),
            max_tokens: 8,
            order_retention: Duration::from_secs(3600),
            max_orders: 100_000,
            max_open_orders_per_customer: 8,
            webhooks: BTreeMap::new(),
            webhook_timeout: Duration::from_secs(10),
            webhook_retry_first: Duration::from_secs(5),
            webhook_retry_max: Duration::from_secs(3600),
            webhook_retry_for: Duration::from_secs(24 * 3600),
            webhook_retention: Duration::from_secs(72 * 3600),
            webhook_concurrency: 16,
        }
    }
}

fn setting(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Setting {
        setting,
        reason: reason.into(),
    }
}

impl ServiceSettings for RelaySettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.issuers.is_empty() {
            return Err(setting("CTR_ISSUERS", "at least one issuer is needed"));
        }
        for (name, entry) in &self.issuers {
            for url in [&entry.jwks_url, &entry.redeem_url, &entry.cancel_url] {
                if !url.starts_with("https://") {
                    return Err(setting(
                        "CTR_ISSUERS",
                        format!("issuer `{name}`: `{url}` is not an https URL"),
                    ));
                }
            }
            if entry.capabilities.is_empty() {
                return Err(setting(
                    "CTR_ISSUERS",
                    format!("issuer `{name}` grants no capability"),
                ));
            }
        }
        let mut granted_by = BTreeMap::new();
        for (name, entry) in &self.issuers {
            for capability in &entry.capabilities {
                if let Some(other) = granted_by.insert(capability, name) {
                    return Err(setting(
                        "CTR_ISSUERS",
                        format!(
                            "`{capability}` is claimed by both `{other}` and `{name}`; a capability routes to one issuer"
                        ),
                    ));
                }
            }
        }
        for capability in self
            .redemption_order
            .iter()
            .chain(&self.required_capabilities)
            .chain(&self.priced_capabilities)
        {
            if self.issuer_of(capability).is_none() {
                return Err(setting(
                    "CTR_REDEMPTION_ORDER",
                    format!("no issuer grants `{capability}`"),
                ));
            }
        }
        for (name, entry) in &self.issuers {
            if let Some(c) = entry
                .capabilities
                .iter()
                .find(|c| !self.redemption_order.contains(c))
            {
                return Err(setting(
                    "CTR_REDEMPTION_ORDER",
                    format!("`{c}` of issuer `{name}` has no place in the order"),
                ));
            }
        }
        if self.token_leeway > Duration::from_secs(60) {
            return Err(setting("CTR_TOKEN_LEEWAY", "at most 60s"));
        }
        if self.max_token_lifetime > Duration::from_secs(300) || self.max_token_lifetime.is_zero() {
            return Err(setting("CTR_MAX_TOKEN_LIFETIME", "between 1s and 5m"));
        }
        if self.call_timeout.is_zero() {
            return Err(setting("CTR_CALL_TIMEOUT", "must be longer than zero"));
        }
        if self.checkout_deadline.is_zero() || self.checkout_deadline > Duration::from_secs(60) {
            return Err(setting(
                "CTR_CHECKOUT_DEADLINE",
                "between 1ms and 60s, and shorter than CTR_REQUEST_TIMEOUT",
            ));
        }
        let one_call = self.call_timeout * (self.call_retries + 1);
        if self.saga_lease <= one_call * 2 {
            return Err(setting(
                "CTR_SAGA_LEASE",
                "must be longer than two calls with their retries (2 x CTR_CALL_TIMEOUT x (CTR_CALL_RETRIES + 1))",
            ));
        }
        if self.checkout_bound < self.checkout_deadline {
            return Err(setting(
                "CTR_CHECKOUT_BOUND",
                "must be at least CTR_CHECKOUT_DEADLINE",
            ));
        }
        if self.recovery_interval.is_zero() {
            return Err(setting("CTR_RECOVERY_INTERVAL", "must be longer than zero"));
        }
        if self.recovery_concurrency == 0 || self.recovery_concurrency > 256 {
            return Err(setting("CTR_RECOVERY_CONCURRENCY", "between 1 and 256"));
        }
        if self.compensation_retry_max < Duration::from_secs(1)
            || self.compensation_retry_max > Duration::from_secs(3600)
        {
            return Err(setting("CTR_COMPENSATION_RETRY_MAX", "between 1s and 1h"));
        }
        if self.compensation_attention_after.is_zero() {
            return Err(setting(
                "CTR_COMPENSATION_ATTENTION_AFTER",
                "must be longer than zero",
            ));
        }
        if self.saga_grace > Duration::from_secs(600) {
            return Err(setting("CTR_SAGA_GRACE", "at most 10m"));
        }
        if self.max_tokens == 0 || self.max_tokens > 32 {
            return Err(setting("CTR_MAX_TOKENS", "between 1 and 32"));
        }
        if self.order_retention < Duration::from_secs(1) {
            return Err(setting("CTR_ORDER_RETENTION", "at least 1s"));
        }
        if self.max_open_orders_per_customer == 0 {
            return Err(setting("CTR_MAX_OPEN_ORDERS_PER_CUSTOMER", "at least 1"));
        }
        if self.max_orders == 0 {
            return Err(setting("CTR_MAX_ORDERS", "at least 1"));
        }
        self.validate_webhooks()
    }
}

impl RelaySettings {
    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        for (name, endpoint) in &self.webhooks {
            let url = reqwest::Url::parse(&endpoint.url).map_err(|e| {
                setting(
                    "CTR_WEBHOOKS",
                    format!("endpoint `{name}`: `{}` is not a URL: {e}", endpoint.url),
                )
            })?;
            if url.scheme() != "https" {
                return Err(setting(
                    "CTR_WEBHOOKS",
                    format!("endpoint `{name}`: `{}` is not an https URL", endpoint.url),
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(setting(
                    "CTR_WEBHOOKS",
                    format!("endpoint `{name}`: credentials do not belong in the URL"),
                ));
            }
            let literal = url.host_str().and_then(|host| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .ok()
            });
            if let Some(why) = literal.and_then(ctr_webhooks::refused_address)
                && !endpoint.allow_private
            {
                return Err(setting(
                    "CTR_WEBHOOKS",
                    format!(
                        "endpoint `{name}`: {} is a {why} address; set CTR_WEBHOOKS__{}__ALLOW_PRIVATE=true if the receiver is inside the deployment",
                        endpoint.url,
                        name.to_uppercase()
                    ),
                ));
            }
            if endpoint.secret_file.as_os_str().is_empty() {
                return Err(setting(
                    "CTR_WEBHOOKS",
                    format!("endpoint `{name}` has no SECRET_FILE"),
                ));
            }
        }
        if self.webhook_timeout.is_zero() || self.webhook_timeout > Duration::from_secs(60) {
            return Err(setting("CTR_WEBHOOK_TIMEOUT", "between 1ms and 60s"));
        }
        if self.webhook_retry_first.is_zero() || self.webhook_retry_first > self.webhook_retry_max {
            return Err(setting(
                "CTR_WEBHOOK_RETRY_FIRST",
                "longer than zero and at most CTR_WEBHOOK_RETRY_MAX",
            ));
        }
        if self.webhook_retry_for < self.webhook_retry_first
            || self.webhook_retry_for > Duration::from_secs(30 * 24 * 3600)
        {
            return Err(setting(
                "CTR_WEBHOOK_RETRY_FOR",
                "at least CTR_WEBHOOK_RETRY_FIRST and at most 30 days",
            ));
        }
        if self.webhook_retention.is_zero() {
            return Err(setting("CTR_WEBHOOK_RETENTION", "must be longer than zero"));
        }
        if self.webhook_concurrency == 0 || self.webhook_concurrency > 256 {
            return Err(setting("CTR_WEBHOOK_CONCURRENCY", "between 1 and 256"));
        }
        Ok(())
    }
}

impl RelaySettings {
    /// The issuer that grants `capability`.
    pub fn issuer_of(&self, capability: &str) -> Option<(&String, &IssuerEntry)> {
        self.issuers
            .iter()
            .find(|(_, e)| e.capabilities.iter().any(|c| c == capability))
    }
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail closures return figment::Error"
)]
mod tests {
    use ctr_service_kit::Config;
    use figment::Jail;

    use super::RelaySettings;

    fn load() -> Result<Config<RelaySettings>, String> {
        Config::load("order-processing", RelaySettings::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_registry_and_policy_come_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env(
                "CTR_ISSUERS__COUPONS__JWKS_URL",
                "https://coupons.example:9443/.well-known/jwks.json",
            );
            jail.set_env(
                "CTR_REQUIRED_CAPABILITIES",
                "[payments:capture, points:redeem]",
            );
            let config = load().unwrap();
            let coupons = &config.service.issuers["coupons"];
            assert_eq!(
                coupons.jwks_url,
                "https://coupons.example:9443/.well-known/jwks.json"
            );
            assert_eq!(
                coupons.redeem_url, "https://coupons:8443/service/v1/coupons/redemptions",
                "the rest keeps its default"
            );
            assert_eq!(
                config.service.required_capabilities,
                ["payments:capture", "points:redeem"]
            );
            Ok(())
        });
    }

    #[test]
    fn an_inconsistent_policy_is_refused_naming_the_setting() {
        for (variable, value) in [
            ("CTR_REQUIRED_CAPABILITIES", "[loyalty:redeem]"),
            ("CTR_PRICED_CAPABILITIES", "[loyalty:redeem]"),
            (
                "CTR_ISSUERS__POINTS__REDEEM_URL",
                "http://points:8443/redeem",
            ),
            ("CTR_REDEMPTION_ORDER", "[coupons:redeem, payments:capture]"),
            ("CTR_TOKEN_LEEWAY", "10m"),
            ("CTR_MAX_TOKENS", "0"),
            ("CTR_MAX_ORDERS", "0"),
            ("CTR_RECOVERY_CONCURRENCY", "0"),
            ("CTR_SAGA_GRACE", "2h"),
            ("CTR_ORDER_RETENTION", "0s"),
            ("CTR_ISSUERS__POINTS__CAPABILITIES", "[coupons:redeem]"),
            (
                "CTR_ISSUERS__POINTS__REDEM_URL",
                "https://points:8443/redeem",
            ),
            ("CTR_ORDER_TTLL", "1m"),
            ("CTR_WEBHOOK_CONCURRENCY", "0"),
            ("CTR_WEBHOOK_RETRY_FIRST", "2h"),
        ] {
            Jail::expect_with(|jail| {
                jail.clear_env();
                jail.set_env(variable, value);
                let error = load().unwrap_err();
                let named = variable.split("__").next().unwrap_or(variable);
                assert!(
                    error.contains(named) || error.contains("CTR_REDEMPTION_ORDER"),
                    "{variable}={value}: {error}"
                );
                Ok(())
            });
        }
    }

    #[test]
    fn webhook_endpoints_come_from_the_environment_and_bad_ones_are_refused() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("CTR_WEBHOOKS__SHOP__URL", "https://shop.example/hooks");
            jail.set_env("CTR_WEBHOOKS__SHOP__SECRET_FILE", "/run/secrets/shop");
            let config = load().unwrap();
            let shop = &config.service.webhooks["shop"];
            assert_eq!(shop.url, "https://shop.example/hooks");
            assert!(
                !shop.allow_private,
                "private targets are refused by default"
            );
            Ok(())
        });
        for (url, extra, why) in [
            ("http://shop.example/hooks", None, "not https"),
            ("https://10.0.0.7/hooks", None, "a private address"),
            ("https://[::1]/hooks", None, "loopback"),
            (
                "https://user:pw@shop.example/hooks",
                None,
                "credentials in the URL",
            ),
            (
                "https://shop.example/hooks",
                Some(("CTR_WEBHOOKS__SHOP__SECRETFILE", "/x")),
                "a misspelt setting",
            ),
        ] {
            Jail::expect_with(|jail| {
                jail.clear_env();
                jail.set_env("CTR_WEBHOOKS__SHOP__URL", url);
                jail.set_env("CTR_WEBHOOKS__SHOP__SECRET_FILE", "/run/secrets/shop");
                if let Some((variable, value)) = extra {
                    jail.set_env(variable, value);
                }
                let error = load().unwrap_err();
                assert!(
                    error.contains("CTR_WEBHOOKS") || error.contains("secretfile"),
                    "{url} ({why}): {error}"
                );
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("CTR_WEBHOOKS__RECEIVER__URL", "https://10.0.0.7/hooks");
            jail.set_env(
                "CTR_WEBHOOKS__RECEIVER__SECRET_FILE",
                "/run/secrets/receiver",
            );
            jail.set_env("CTR_WEBHOOKS__RECEIVER__ALLOW_PRIVATE", "true");
            assert!(load().is_ok(), "a private receiver allowed by its setting");
            Ok(())
        });
    }
}
