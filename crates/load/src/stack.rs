//! The four services in this process on 127.0.0.1, with seed data for the virtual customers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ctr_domain_kit::DomainSettings;
use ctr_service_kit::testing::TestPki;
use ctr_service_kit::{App, StartError};
use ctr_token::{Clock, SystemClock};
use order_processing::{IssuerEntry, RelaySettings};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Targets;

/// The most flows one run may drive.
pub const MAX_FLOWS: usize = 1_000_000;

/// Writes seed files giving each of `customers` virtual customers a balance and a card, so
/// that runs do not depend on one another.
pub fn write_seeds(dir: &Path, customers: usize) -> std::io::Result<()> {
    let balances: serde_json::Map<String, serde_json::Value> = (0..customers)
        .map(|i| (format!("c_load_{i}"), json!(1_000_000_000u64)))
        .collect();
    let methods: Vec<_> = (0..customers)
        .map(|i| {
            json!({"id": format!("pm_load_{i}"), "customer_id": format!("c_load_{i}"),
                   "limit": {"amount": 1_000_000, "currency": "EUR"}})
        })
        .collect();
    std::fs::write(
        dir.join("points.json"),
        json!({ "balances": balances }).to_string(),
    )?;
    std::fs::write(
        dir.join("payments.json"),
        json!({ "methods": methods }).to_string(),
    )?;
    std::fs::write(dir.join("coupons.json"), coupons::BUILTIN_SEED)?;
    Ok(())
}

/// The running services; they stop when this is dropped.
pub struct InProcess {
    pub pki: TestPki,
    pub targets: Targets,
    _seeds: tempfile::TempDir,
    stops: Vec<CancellationToken>,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stops.iter().for_each(CancellationToken::cancel);
    }
}

fn run(app: App, stops: &mut Vec<CancellationToken>) -> (String, String) {
    let urls = (
        format!("https://{}", app.public_addr()),
        format!("https://{}", app.admin_addr()),
    );
    stops.push(app.shutdown_token());
    tokio::spawn(app.run_until_stopped());
    urls
}

/// Where the in-process services keep their state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// SQLite in memory: the durable code path without a file (the baseline).
    Memory,
    /// An SQLite file per service in a temporary directory: what a user runs
    /// (`synchronous = FULL`, the default).
    Sqlite,
    /// The same with `synchronous = NORMAL` (`sqlite-normal`): what it costs to sync at every
    /// COMMIT.
    SqliteNormal,
    /// A fresh database per service on this PostgreSQL server (a database of a role that
    /// may create databases).
    Postgres(String),
}

impl std::str::FromStr for StoreChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "memory" => Ok(Self::Memory),
            "sqlite" => Ok(Self::Sqlite),
            "sqlite-normal" => Ok(Self::SqliteNormal),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Postgres(url.to_owned()))
            }
            other => Err(format!(
                "`{other}`: the store is memory, sqlite, sqlite-normal or a postgres:// URL"
            )),
        }
    }
}

impl StoreChoice {
    /// The backend's name, for reports (never the URL: it may hold a password).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::SqliteNormal => "sqlite-normal",
            Self::Postgres(_) => "postgres",
        }
    }

    async fn url(&self, pki: &TestPki, service: &str) -> Result<String, StartError> {
        match self {
            Self::Memory => Ok("sqlite::memory:".into()),
            Self::Sqlite => Ok(pki.server_config(service).store_url),
            Self::SqliteNormal => Ok(format!(
                "{}&synchronous=normal",
                pki.server_config(service).store_url
            )),
            Self::Postgres(admin) => {
                let database = format!(
                    "ctr_load_{}_{}",
                    service.replace('-', "_"),
                    uuid::Uuid::now_v7().simple()
                );
                ctr_store::execute_once(admin, &format!("CREATE DATABASE {database}"))
                    .await
                    .map_err(|e| StartError::Store(e.to_string()))?;
                let (server, _) = admin
                    .rsplit_once('/')
                    .ok_or_else(|| StartError::Store("the URL names no database".into()))?;
                Ok(format!("{server}/{database}"))
            }
        }
    }
}

impl InProcess {
    pub async fn start(
        customers: usize,
        store: &StoreChoice,
        auth: crate::Auth,
    ) -> Result<Self, StartError> {
        let pki = TestPki::new();
        // The customers' issuer first: every service's config trusts it.
        let issuer = dev_issuer::build(
            &pki.server_config(ctr_service_kit::testing::DEV_ISSUER),
            &dev_issuer::DevIssuerSettings {
                dev_issuer_key_file: pki.dir().join("dev-issuer-key.pem"),
                ..dev_issuer::DevIssuerSettings::default()
            },
        )
        .await?;
        pki.trust_customer_issuer(issuer.issuer.url());
        let tokens = (0..customers)
            .map(|i| {
                let key = auth.key().map_err(StartError::Service)?;
                let token = issuer.issuer.mint_bound(
                    &format!("c_load_{i}"),
                    &ctr_service_kit::scopes::ALL,
                    Duration::from_secs(24 * 3600),
                    key.as_ref().map(|k| k.thumbprint()),
                );
                Ok(crate::Credential { token, key })
            })
            .collect::<Result<Vec<_>, StartError>>()?;
        let mut stops = Vec::new();
        run(issuer.app, &mut stops);
        let mut servers = std::collections::HashMap::new();
        for service in ["coupons", "points", "payments", "order-processing"] {
            let config = ctr_service_kit::ServerConfig {
                store_url: store.url(&pki, service).await?,
                ..pki.server_config(service)
            };
            servers.insert(service, config);
        }
        let server = |service: &str| servers[service].clone();
        let seeds = tempfile::tempdir().map_err(|e| StartError::Service(e.to_string()))?;
        write_seeds(seeds.path(), customers).map_err(|e| StartError::Service(e.to_string()))?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let settings = |domain: &str| DomainSettings {
            seed_file: Some(seeds.path().join(format!("{domain}.json"))),
            ..DomainSettings::with_mock_kms()
        };
        let (coupons, _) = run(
            coupons::build_with(&server("coupons"), &settings("coupons"), clock.clone())
                .await?
                .app,
            &mut stops,
        );
        let (points, _) = run(
            points::build_with(
                &server("points"),
                &points::PointsSettings {
                    domain: settings("points"),
                    ..points::PointsSettings::default()
                },
                clock.clone(),
            )
            .await?
            .app,
            &mut stops,
        );
        let (payments, _) = run(
            payments::build_with(&server("payments"), &settings("payments"), clock.clone())
                .await?
                .app,
            &mut stops,
        );
        let client = pki.client_identity("order-processing");
        let relay_settings = RelaySettings {
            issuers: [
                ("coupons", "coupons:redeem", &coupons),
                ("points", "points:redeem", &points),
                ("payments", "payments:capture", &payments),
            ]
            .into_iter()
            .map(|(name, capability, base)| {
                (name.to_owned(), IssuerEntry::at(base, name, capability))
            })
            .collect(),
            client_cert: client.cert,
            client_key: client.key,
            // Every flow opens an order, and none is forgotten within a run.
            max_orders: MAX_FLOWS,
            ..RelaySettings::default()
        };
        let relay =
            order_processing::build_with(&server("order-processing"), &relay_settings, clock)
                .await?;
        let (relay, relay_admin) = run(relay.app, &mut stops);
        let probe = pki.client(None);
        for _ in 0..200 {
            if probe
                .get(format!("{relay_admin}/admin/v1/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let targets = Targets {
            relay,
            coupons,
            points,
            payments,
            tokens: Arc::new(tokens),
            keys: crate::Keys::Off,
        };
        Ok(Self {
            pki,
            targets,
            _seeds: seeds,
            stops,
        })
    }
}
