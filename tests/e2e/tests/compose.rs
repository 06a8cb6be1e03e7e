#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! The compose files as compose reads them: they validate, publish on 127.0.0.1 only, and the
//! observability override points every service's traces at the collector and opens only the
//! metrics listener, never the admin one.

/// `docker compose config` (v2) or `docker-compose config` (v1) of `files`, from the repo root.
fn config(files: &[&str]) -> String {
    let mut command = ctr_e2e_tests::compose();
    for file in files {
        command.args(["-f", file]);
    }
    let out = command
        .arg("config")
        .env_remove("CTR_PUBLISH_ADDR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{files:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_stack_validates_and_publishes_on_loopback_only() {
    let config = config(&["compose.yaml"]);
    for port in ["8443", "8444", "8445", "8446"] {
        assert!(
            config.contains(&format!("127.0.0.1:{port}:8443"))
                || config.contains(&format!("published: \"{port}\"")),
            "{port}: {config}"
        );
    }
    // No port published on every address (a service may listen on 0.0.0.0 inside its
    // container: the receiver does).
    assert!(
        !config
            .lines()
            .any(|l| l.trim().starts_with("- 0.0.0.0:") || l.trim() == "host_ip: 0.0.0.0"),
        "{config}"
    );
    assert!(config.contains("host_ip: 127.0.0.1") || !config.contains("host_ip"));
}

#[test]
fn the_observability_override_validates_and_wires_traces_and_metrics() {
    let config = config(&["compose.yaml", "deployments/observability/compose.yaml"]);
    assert_eq!(
        config
            .matches("CTR_OTLP_ENDPOINT: http://otel-collector:4318")
            .count(),
        4,
        "{config}"
    );
    assert_eq!(config.matches("CTR_METRICS_ADDR: 0.0.0.0:9464").count(), 4);
    for service in ["otel-collector:", "jaeger:", "prometheus:", "grafana:"] {
        assert!(config.contains(service), "{service}");
    }
    // Grafana is provisioned with Prometheus and the ctr dashboard from the repository.
    for mount in [
        "deployments/observability/grafana/provisioning",
        "deployments/observability/grafana/dashboards",
    ] {
        assert!(config.contains(mount), "{mount} is not mounted: {config}");
    }
    // Only Prometheus's own UI maps a container port 9090; no service's admin (9090) or
    // metrics (9464) listener is published.
    assert_eq!(
        config.matches(":9090/tcp").count() + config.matches("target: 9090").count(),
        1,
        "{config}"
    );
    assert!(
        !config.contains("9464/tcp") && !config.contains("target: 9464"),
        "{config}"
    );
}

#[test]
fn the_openbao_override_validates_and_points_every_domain_at_it() {
    let config = config(&["compose.yaml", "deployments/openbao/compose.yaml"]);
    // The three domains sign through OpenBao over TLS with its CA and a token file; the relay
    // does not (it cannot sign at all).
    assert_eq!(
        config.matches("CTR_KMS__BACKEND: vault").count(),
        3,
        "{config}"
    );
    assert_eq!(
        config
            .matches("CTR_KMS__ADDR: https://openbao:8200")
            .count(),
        3,
        "{config}"
    );
    assert_eq!(
        config
            .matches("CTR_KMS__TOKEN_FILE: /run/secrets/openbao-token")
            .count(),
        3
    );
    // The service itself, and each domain waiting for it to have mounted transit.
    assert_eq!(config.matches("openbao-init:").count(), 4, "{config}");
    assert!(config.contains("\n  openbao:\n"), "{config}");
    // OpenBao is not published on the host.
    assert!(
        !config.contains("8200/tcp") && !config.contains("published: \"8200\""),
        "{config}"
    );
}
