//! What every service's `main` does: parse the command line, load the configuration, start
//! telemetry, run the service, or probe it (`healthcheck`).

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use crate::{App, Config, ServerConfig, ServiceSettings, StartError};

const USAGE: &str = "usage: SERVICE [serve | healthcheck | admin PATH [JSON]]
  serve        run the service (default)
  healthcheck  GET this service's /admin/v1/healthz, print it, exit 0 when healthy
  admin PATH   GET an admin path of this service (e.g. /admin/v1/metrics) and print it;
               with JSON, POST it there instead (e.g. /admin/v1/webhooks/redeliveries)
Configuration comes from CTR_* variables and the TOML file named by CTR_CONFIG_FILE.";

/// Runs service `name`: `start` builds the [`App`] from the loaded configuration.
pub fn main_with<S, F, Fut>(name: &'static str, defaults: S, start: F) -> ExitCode
where
    S: ServiceSettings,
    F: FnOnce(Config<S>) -> Fut,
    Fut: Future<Output = Result<App, StartError>>,
{
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".into());
    let admin_path = match (command.as_str(), std::env::args().nth(2)) {
        ("healthcheck", _) => Some("/admin/v1/healthz".to_owned()),
        ("admin", Some(path)) if path.starts_with("/admin/") => Some(path),
        _ => None,
    };
    if command != "serve" && admin_path.is_none() {
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
    if let Some(path) = admin_path {
        let body = std::env::args().nth(3);
        return match runtime.block_on(admin_request(&config.server, &path, body)) {
            Ok(body) => {
                println!("{body}");
                ExitCode::SUCCESS
            }
            Err(reason) => {
                eprintln!("{name}: {reason}");
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
pub async fn healthcheck(config: &ServerConfig) -> Result<String, String> {
    admin_get(config, "/admin/v1/healthz").await
}

/// `GET path` on this service's own admin listener over TLS: the body when it answers 2xx.
pub async fn admin_get(config: &ServerConfig, path: &str) -> Result<String, String> {
    admin_request(config, path, None).await
}

/// `GET path`, or `POST` of the JSON `body` when there is one, on this service's own admin
/// listener over TLS: the answer's body when it is 2xx.
async fn admin_request(
    config: &ServerConfig,
    path: &str,
    body: Option<String>,
) -> Result<String, String> {
    let client = crate::https_client(&config.tls_root, None, Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    let url = format!("https://{}{path}", config.admin_addr);
    let request = match body {
        None => client.get(&url),
        Some(body) => client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body),
    };
    let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{url} answered {status}: {body}"))
    }
}
