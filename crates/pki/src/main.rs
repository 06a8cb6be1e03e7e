//! `ctr-pki init`: writes a deployment's CA chain, server and client certificates.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ctr_pki::{LeafSpec, PkiSpec, ROOT_FILE};

#[derive(Parser)]
#[command(version, about = "The private PKI of a ctr deployment")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a CA chain and leaves into DIR (kept as is if DIR already holds a root).
    Init {
        /// Where to write the files.
        #[arg(long, env = "CTR_PKI_OUT")]
        out: PathBuf,
        /// Certificates in a chain, root and leaf included.
        #[arg(long, default_value_t = 3, env = "CTR_PKI_TIERS")]
        tiers: u8,
        /// A server leaf: NAME or NAME=extra.dns,other.dns (SANs NAME, localhost, 127.0.0.1, extras).
        #[arg(long = "service", value_name = "NAME[=DNS,...]")]
        services: Vec<String>,
        /// A client (mTLS) leaf named NAME.
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
        /// Replace an existing PKI in DIR.
        #[arg(long)]
        force: bool,
    },
}

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
    let Command::Init {
        out,
        tiers,
        services,
        clients,
        force,
    } = Cli::parse().command;
    if out.join(ROOT_FILE).exists() && !force {
        println!(
            "{} already holds a PKI; keeping it (use --force to replace it)",
            out.display()
        );
        return ExitCode::SUCCESS;
    }
    let spec = PkiSpec {
        tiers,
        servers: services.iter().map(|s| leaf(s)).collect(),
        clients: clients.iter().map(|c| leaf(c)).collect(),
        ..PkiSpec::default()
    };
    match spec.generate().and_then(|pki| pki.write_to(&out)) {
        Ok(()) => {
            println!(
                "wrote a {tiers}-tier PKI to {}: {} server and {} client certificates; trust {}",
                out.display(),
                spec.servers.len(),
                spec.clients.len(),
                out.join(ROOT_FILE).display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ctr-pki: {e}");
            ExitCode::FAILURE
        }
    }
}
