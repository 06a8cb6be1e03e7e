//! The guide's configuration reference is made from the settings structures (their types,
//! defaults and doc comments), like the OpenAPI documents: `CTR_BLESS=1` rewrites it, and a
//! setting added without regenerating it fails here. `.env.example` may name only settings the
//! reference has, with the same defaults.

use std::path::PathBuf;

use clap::{ArgAction, Args, CommandFactory};
use ctr_service_kit::ServerConfig;
use ctr_service_kit::settings_reference::{Setting, meaning, settings, table};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

const PAGE: &str = "docs/guide/src/operating/configuration-reference.md";

/// The `CTR_*` variables of a command line: each flag a variable also sets.
fn command_settings(command: &clap::Command) -> Vec<Setting> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let name = arg.get_env()?.to_str()?.to_owned();
            let default: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let value_names: Vec<&str> = arg
                .get_value_names()
                .map(|names| names.iter().map(|n| n.as_str()).collect())
                .unwrap_or_default();
            let flag = matches!(arg.get_action(), ArgAction::SetTrue);
            let kind = if flag {
                "boolean"
            } else if value_names.contains(&"DURATION") {
                "duration"
            } else if default.len() == 1 && default[0].parse::<u64>().is_ok() {
                "integer"
            } else {
                "string"
            };
            Some(Setting {
                name,
                kind: kind.into(),
                default: if flag {
                    "false".into()
                } else if default.is_empty() {
                    "unset".into()
                } else {
                    default.join(",")
                },
                meaning: meaning(&arg.get_help().map(ToString::to_string).unwrap_or_default()),
            })
        })
        .collect()
}

fn setting(name: &str, kind: &str, meaning: &str) -> Setting {
    Setting {
        name: name.into(),
        kind: kind.into(),
        default: "unset".into(),
        meaning: meaning.into(),
    }
}

/// Each service's own settings, after what every service shares.
fn sections() -> Vec<(&'static str, &'static str, Vec<Setting>)> {
    // Read by the loader itself, before the structures.
    let mut server = vec![setting(
        "CTR_CONFIG_FILE",
        "path",
        "A TOML file of settings (the same keys in lowercase), read after the defaults and before the variables.",
    )];
    server.extend(settings(&ServerConfig::defaults("<service>")));
    let pki = ctr_pki::cli::Cli::command();
    let init = pki.find_subcommand("init").expect("ctr-pki init");
    let mut client = command_settings(&ctr_cli::api::Endpoints::augment_args(clap::Command::new(
        "ctr",
    )));
    // Read from the environment only, never a flag, so that it shows in no process list.
    client.push(setting(
        "CTR_ACCESS_TOKEN",
        "string",
        "An access token to act with instead of logging in at the issuer (never a flag).",
    ));
    let domain = settings(&ctr_domain_kit::DomainSettings::default());
    let points: Vec<Setting> = settings(&points::PointsSettings::default())
        .into_iter()
        .filter(|s| !domain.iter().any(|d| d.name == s.name))
        .collect();
    vec![
        (
            "Every service",
            "Listeners, TLS, limits, logs and telemetry, the store, idempotency keys, and the \
             issuer of customers' access tokens (`CTR_AUTH_*`). `<service>` stands for the \
             service's name.",
            server,
        ),
        (
            "order-processing",
            "The relay: its issuer registry, checkout policy, saga and webhooks.",
            settings(&order_processing::RelaySettings::default()),
        ),
        (
            "coupons, points, payments",
            "Every domain: its KMS, its tokens and holds.",
            domain,
        ),
        ("points", "What a point is worth.", points),
        (
            "dev-issuer",
            "The development issuer of customers' access tokens (compose only).",
            settings(&dev_issuer::DevIssuerSettings::default()),
        ),
        (
            "pki-init and pki-renew",
            "`ctr-pki init`, which makes the private PKI and renews its leaves: each of its \
             flags is also a variable.",
            command_settings(init),
        ),
        (
            "ctr and the demo",
            "The `ctr` client (and compose's `demo` and `receiver`, which run it): where the \
             stack is and who the customer is; each is also a flag (`ctr --help`).",
            client,
        ),
    ]
}

fn page() -> String {
    let mut page = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from the settings structures by \
         `CTR_BLESS=1 cargo test -p ctr-system-tests config_reference`; do not edit. -->\n\n\
         Every setting of every service, made from the code: its type, its default and what it \
         means. A service reads its compiled-in defaults, then the TOML file named by \
         `CTR_CONFIG_FILE` (the same keys in lowercase, `__` as a table), then `CTR_*` \
         variables; a variable that names no setting, or a bad value, stops it with a message \
         naming the variable. Durations are written as `500ms`, `3s`, `2m`, `1h`; lists as \
         `[a, b]`. How to choose them: [Configuration](configuration.md).\n",
    );
    for (title, about, settings) in sections() {
        page.push_str(&format!("\n## {title}\n\n{about}\n\n{}", table(&settings)));
    }
    page
}

#[test]
fn the_committed_reference_is_the_one_the_code_makes() {
    let generated = page();
    let path = repo(PAGE);
    if std::env::var_os("CTR_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    assert!(
        std::fs::read_to_string(&path).ok().as_deref() == Some(generated.as_str()),
        "{PAGE} is stale: run `CTR_BLESS=1 cargo test -p ctr-system-tests config_reference` and commit the result"
    );
}

/// Whether `name` is one of the settings `pattern` stands for (`CTR_ISSUERS__<NAME>__JWKS_URL`):
/// the same `__`-separated parts, a placeholder standing for any one part.
fn names(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<&str>, Vec<&str>) =
        (pattern.split("__").collect(), name.split("__").collect());
    pattern.len() == name.len()
        && pattern
            .iter()
            .zip(&name)
            .all(|(p, n)| p == n || p.starts_with('<') && !n.is_empty())
}

#[test]
fn env_example_names_only_settings_of_the_reference_with_their_defaults() {
    let reference: Vec<Setting> = sections()
        .into_iter()
        .flat_map(|(_, _, settings)| settings)
        .collect();
    let example = std::fs::read_to_string(repo(".env.example")).unwrap();
    // The first section is compose's own (image tag, ports, pki-init's CTR_PKI_*).
    let services = example
        .split_once("# ---- every service")
        .expect(".env.example has an 'every service' section")
        .1;
    let mut unknown = Vec::new();
    let mut differing = Vec::new();
    for line in services.lines() {
        let commented = line.starts_with("# CTR_");
        let line = line.trim_start_matches("# ");
        let Some((name, rest)) = line.split_once('=') else {
            continue;
        };
        if !name.starts_with("CTR_") || name.contains(' ') {
            continue;
        }
        let Some(setting) = reference.iter().find(|s| names(&s.name, name)) else {
            unknown.push(name.to_owned());
            continue;
        };
        // A commented line shows the default; an active one what compose sets.
        let value = rest.split("  ").next().unwrap_or("").trim();
        // A map's default names each key (`EUR=1, USD=1`); a line sets one of them.
        let key = name.rsplit("__").next().unwrap_or(name);
        let default = match setting.default.split(", ").find_map(|pair| {
            pair.split_once('=')
                .filter(|(k, _)| setting.name != name && k.eq_ignore_ascii_case(key))
        }) {
            Some((_, value)) => value.to_owned(),
            None => setting.default.clone(),
        };
        let same = value == default
            || setting.kind == "duration"
                && humantime::parse_duration(value).ok()
                    == humantime::parse_duration(&default).ok();
        if commented && !value.contains('<') && setting.default != "unset" && !same {
            differing.push(format!("{name}: .env.example {value}, code {default}"));
        }
    }
    assert!(
        unknown.is_empty(),
        ".env.example names settings no service has: {unknown:?}"
    );
    assert!(
        differing.is_empty(),
        ".env.example shows other defaults than the code: {differing:#?}"
    );
}
