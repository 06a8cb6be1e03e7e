//! `ctr-pki init`: writes a deployment's CA chain, server and client certificates, or renews
//! the leaves of the one already there.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use ctr_pki::cli::{Cli, Command, Init};
use ctr_pki::{LeafKind, LeafOutcome, LeafSpec, PkiSpec, ROOT_FILE};

fn leaf(arg: &str) -> LeafSpec {
    let (name, extra) = arg.split_once('=').unwrap_or((arg, ""));
    let dns_names = extra
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    LeafSpec {
        name: name.to_owned(),
        dns_names,
    }
}

fn main() -> ExitCode {
    let Command::Init(init) = Cli::parse().command;
    let Some(every) = init.every else {
        return report(run(&init));
    };
    if init.force {
        return report(Err(
            "--every renews; it cannot be combined with --force".into()
        ));
    }
    // The renewer: a failed round is reported and tried again at the next.
    loop {
        if let Err(e) = run(&init) {
            eprintln!("ctr-pki: {e}");
        }
        println!(
            "next renewal check in {}",
            humantime::format_duration(every)
        );
        std::thread::sleep(every);
    }
}

/// One round: a new PKI, or the existing one renewed; then deliveries and exports.
fn run(init: &Init) -> Result<(), String> {
    let Init {
        out,
        tiers,
        services,
        clients,
        force,
        leaf_validity,
        renew_within,
        renew_all,
        chown,
        export_root,
        print_root,
        export_owner,
        deliveries,
        webhook_secrets,
        every: _,
    } = init;
    let (tiers, force, renew_all) = (*tiers, *force, *renew_all);
    let finish = || -> Result<(), String> {
        for shared in webhook_secrets {
            webhook_secret(out, shared)?;
        }
        for delivery in deliveries {
            let (name, dir) = delivery
                .split_once('=')
                .ok_or_else(|| format!("--deliver wants NAME=DIR, not `{delivery}`"))?;
            let dir = PathBuf::from(dir);
            ctr_pki::deliver(out, name, &dir).map_err(|e| e.to_string())?;
            if let Some(owner) = &chown {
                chown_tree(&dir, owner)?;
            }
            println!(
                "delivered {name}'s certificates and keys to {}",
                dir.display()
            );
        }
        if let Some(owner) = &chown {
            chown_tree(out, owner)?;
        }
        if let Some(path) = &export_root {
            std::fs::copy(out.join(ROOT_FILE), path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            make_public(path)?;
            if let Some(owner) = &export_owner {
                chown_one(path, owner)?;
                if let Some(dir) = path.parent() {
                    chown_one(dir, owner)?;
                }
            }
            println!("exported the root CA to {}", path.display());
        }
        if *print_root {
            let root = std::fs::read_to_string(out.join(ROOT_FILE))
                .map_err(|e| format!("{}: {e}", out.join(ROOT_FILE).display()))?;
            print!("the root CA:\n{root}");
        }
        Ok(())
    };
    let spec = PkiSpec {
        tiers,
        servers: services.iter().map(|s| leaf(s)).collect(),
        clients: clients.iter().map(|c| leaf(c)).collect(),
        leaf_validity: *leaf_validity,
        ..PkiSpec::default()
    };
    if out.join(ROOT_FILE).exists() && !force {
        let within = if renew_all {
            Duration::MAX
        } else {
            *renew_within
        };
        let now = SystemTime::now();
        let renewed = match spec.renew(out, within, now) {
            // A PKI made before the issuing key was kept: while every leaf is still
            // valid the stack starts, warned; once one has expired it cannot.
            Err(error @ ctr_pki::PkiError::NoIssuer { .. }) => {
                let still_valid = spec.renew(out, Duration::ZERO, now);
                if still_valid.is_ok() {
                    eprintln!("ctr-pki: warning: {error}");
                }
                still_valid.map_err(|_| error)
            }
            other => other,
        };
        return match renewed {
            Ok(renewals) => {
                for renewal in renewals {
                    let kind = match renewal.kind {
                        LeafKind::Server => "server",
                        LeafKind::Client => "client",
                    };
                    let name = renewal.name;
                    match renewal.outcome {
                        LeafOutcome::Kept { not_after } => println!(
                            "kept {name}'s {kind} certificate: valid until {}",
                            humantime::format_rfc3339_seconds(not_after)
                        ),
                        LeafOutcome::Issued => println!("issued {name}'s {kind} certificate"),
                        LeafOutcome::Renewed { reason } => {
                            println!("renewed {name}'s {kind} certificate: {reason}");
                        }
                    }
                }
                finish()
            }
            Err(e) => Err(e.to_string()),
        };
    }
    match spec.generate().and_then(|pki| pki.write_to(out)) {
        Ok(()) => {
            println!(
                "wrote a {tiers}-tier PKI to {}: {} server and {} client certificates; trust {}",
                out.display(),
                spec.servers.len(),
                spec.clients.len(),
                out.join(ROOT_FILE).display()
            );
            finish()
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Makes the webhook secret `NAME=SERVICE,...` once, and gives each service a copy that it
/// lacks (owner-only, like its keys).
fn webhook_secret(out: &std::path::Path, shared: &str) -> Result<(), String> {
    let (name, holders) = shared
        .split_once('=')
        .ok_or_else(|| format!("--webhook-secret wants NAME=SERVICE,SERVICE, not `{shared}`"))?;
    let file = format!("webhook-{name}.key");
    let holders: Vec<std::path::PathBuf> = holders
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| out.join(h))
        .collect();
    let existing = holders
        .iter()
        .find_map(|dir| std::fs::read_to_string(dir.join(&file)).ok());
    let secret = existing.unwrap_or_else(|| format!("{}\n", ctr_webhooks::new_secret()));
    for dir in holders {
        let path = dir.join(&file);
        if path.exists() {
            continue;
        }
        if !dir.is_dir() {
            return Err(format!(
                "--webhook-secret {name}: {} is not a service of this PKI",
                dir.display()
            ));
        }
        write_secret(&path, &secret)?;
        println!("gave webhook secret {name} to {}", path.display());
    }
    Ok(())
}

#[cfg(unix)]
fn write_secret(path: &std::path::Path, secret: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(secret.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(not(unix))]
fn write_secret(path: &std::path::Path, secret: &str) -> Result<(), String> {
    std::fs::write(path, secret).map_err(|e| format!("{}: {e}", path.display()))
}

fn report(outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ctr-pki: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(unix)]
fn owner_ids(owner: &str) -> Result<(u32, u32), String> {
    let parse = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("an owner is UID:GID, not `{owner}`"))
    };
    let (uid, gid) = owner
        .split_once(':')
        .ok_or_else(|| format!("an owner is UID:GID, not `{owner}`"))?;
    Ok((parse(uid)?, parse(gid)?))
}

#[cfg(unix)]
fn chown_one(path: &std::path::Path, owner: &str) -> Result<(), String> {
    let (uid, gid) = owner_ids(owner)?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(unix)]
fn make_public(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(unix)]
fn chown_tree(dir: &std::path::Path, owner: &str) -> Result<(), String> {
    let (uid, gid) = owner_ids(owner)?;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| format!("{}: {e}", path.display()))? {
                pending.push(entry.map_err(|e| e.to_string())?.path());
            }
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn chown_tree(_: &std::path::Path, _: &str) -> Result<(), String> {
    Err("--chown is only supported on unix".into())
}

#[cfg(not(unix))]
fn chown_one(_: &std::path::Path, _: &str) -> Result<(), String> {
    Err("--export-owner is only supported on unix".into())
}

#[cfg(not(unix))]
fn make_public(_: &std::path::Path) -> Result<(), String> {
    Ok(())
}
