//! What every service's `main` does: parse the command line, load the configuration, start
//! telemetry, run the service, or probe it (`healthcheck`).

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use crate::{App, Config, ServerConfig, ServiceSettings, StartError};

const USAGE: &str = "usage: SERVICE [serve | healthcheck]\n  serve        run the service (default)\n  healthcheck  probe this service's admin /admin/v1/healthz; exit 0 when healthy\nConfiguration comes from CTR_* variables and the TOML file named by CTR_CONFIG_FILE.";

/// Runs service `name`: `start` builds the [`App`] from the loaded configuration.
pub fn main_with<S, F, Fut>(name: &'static str, defaults: S, start: F) -> ExitCode
where
    S: ServiceSettings,
    F: FnOnce(Config<S>) -> Fut,
    Fut: Future<Output = Result<App, StartError>>,
{
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    if !matches!(command.as_str(), "serve" | "healthcheck") {
        eprintln!("{USAGE}");
        return if matches!(command.as_str(), "-h" | "--help" | "help") {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        };
    }
    let config = match Config::load(name, defaults) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: the async runtime could not start: {error}");
            return ExitCode::FAILURE;
        }
    };
    if command == "healthcheck" {
        return match runtime.block_on(healthcheck(&config.server)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(reason) => {
                eprintln!("{name}: unhealthy: {reason}");
                ExitCode::FAILURE
            }
        };
    }
    let telemetry = match crate::telemetry::init(name, &config.server) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async move { start(config).await?.run_until_stopped().await });
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(telemetry);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Probes `GET /admin/v1/healthz` on this service's own admin listener over TLS.
pub async fn healthcheck(config: &ServerConfig) -> Result<(), String> {
    let client = crate::https_client(&config.tls_root, None, Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    let url = format!("https://{}/admin/v1/healthz", config.admin_addr);
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "{url} answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        ))
    }
}
