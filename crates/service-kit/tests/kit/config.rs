//! Configuration errors name the setting; a missing certificate names the path.

use ctr_service_kit::testing::TestPki;
use ctr_service_kit::{
    App, ClientAuth, Config, Health, Metrics, ServerConfig, Service, ServiceSettings,
};
use figment::Jail;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Settings {
    hold_ttl_seconds: u32,
}

impl ServiceSettings for Settings {}

fn load() -> Result<Config<Settings>, String> {
    Config::load(
        "coupons",
        Settings {
            hold_ttl_seconds: 300,
        },
    )
    .map_err(|e| e.to_string())
}

#[test]
fn defaults_load_and_variables_override_them() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let config = load().unwrap();
        assert_eq!(config.server.public_addr.port(), 8443);
        assert_eq!(config.server.admin_addr.to_string(), "127.0.0.1:9090");
        assert_eq!(
            config.server.tls_cert.to_str(),
            Some("/pki/coupons/server.pem")
        );
        jail.set_env("CTR_PUBLIC_ADDR", "127.0.0.1:9443");
        jail.set_env("CTR_HOLD_TTL_SECONDS", "60");
        jail.set_env("CTR_SHUTDOWN_GRACE", "3s");
        let config = load().unwrap();
        assert_eq!(config.server.public_addr.port(), 9443);
        assert_eq!(config.server.shutdown_grace.as_secs(), 3);
        assert_eq!(config.service.hold_ttl_seconds, 60);
        Ok(())
    });
}

#[test]
fn a_file_named_by_ctr_config_file_is_read_and_the_environment_wins() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file(
            "ctr.toml",
            "hold_ttl_seconds = 90\nbody_limit_bytes = 4096\n",
        )?;
        jail.set_env("CTR_CONFIG_FILE", "ctr.toml");
        jail.set_env("CTR_BODY_LIMIT_BYTES", "8192");
        let config = load().unwrap();
        assert_eq!(config.service.hold_ttl_seconds, 90);
        assert_eq!(config.server.body_limit_bytes, 8192);
        Ok(())
    });
}

#[test]
fn a_bad_setting_is_named_in_the_error() {
    let cases = [
        ("CTR_PUBLIC_ADDR", "not-an-address"),
        ("CTR_SHUTDOWN_GRACE", "soon"),
        ("CTR_HOLD_TTL_SECONDS", "-5"),
        ("CTR_ADMIN_ADDR", "0.0.0.0:9090"),
        ("CTR_LOG_FORMAT", "xml"),
        ("CTR_OTLP_ENDPOINT", "collector:4318"),
    ];
    for (variable, value) in cases {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env(variable, value);
            let error = load().unwrap_err();
            assert!(
                error.contains(variable),
                "{variable}={value} gave `{error}`"
            );
            Ok(())
        });
    }
}

#[test]
fn a_variable_or_file_key_that_names_no_setting_is_refused_by_name() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("CTR_SHUTDOWN_GARCE", "3s");
        let error = load().unwrap_err();
        assert!(error.contains("CTR_SHUTDOWN_GARCE"), "{error}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("ctr.toml", "hold_ttl_secs = 90\n")?;
        jail.set_env("CTR_CONFIG_FILE", "ctr.toml");
        let error = load().unwrap_err();
        assert!(
            error.contains("`hold_ttl_secs`") && error.contains("ctr.toml"),
            "{error}"
        );
        Ok(())
    });
    // The file's own variable is not a setting, and is not refused.
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("ctr.toml", "")?;
        jail.set_env("CTR_CONFIG_FILE", "ctr.toml");
        load().unwrap();
        Ok(())
    });
}

#[tokio::test]
async fn a_missing_certificate_file_names_the_path() {
    let pki = TestPki::new();
    let config = ServerConfig {
        tls_cert: "/nonexistent/coupons.pem".into(),
        ..pki.server_config("coupons")
    };
    let service = Service {
        name: "coupons",
        client_auth: ClientAuth::None,
    };
    let error = App::build(
        service,
        &config,
        axum::Router::new(),
        Health::default(),
        Metrics::default(),
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/coupons.pem"),
        "{error}"
    );
}

#[test]
fn the_scrape_listener_is_off_unless_an_address_is_given() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        assert_eq!(load().unwrap().server.metrics_addr, None);
        // Compose passes `${CTR_METRICS_ADDR:-}`: empty is unset.
        jail.set_env("CTR_METRICS_ADDR", "");
        assert_eq!(load().unwrap().server.metrics_addr, None);
        jail.set_env("CTR_METRICS_ADDR", "0.0.0.0:9464");
        assert_eq!(
            load().unwrap().server.metrics_addr,
            Some("0.0.0.0:9464".parse().unwrap())
        );
        jail.set_env("CTR_METRICS_ADDR", "nowhere");
        let error = load().unwrap_err();
        assert!(
            error.contains("METRICS_ADDR") || error.contains("metrics_addr"),
            "{error}"
        );
        Ok(())
    });
}
