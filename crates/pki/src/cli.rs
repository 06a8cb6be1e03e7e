//! The `ctr-pki` command line: its subcommand and flags, each flag also a `CTR_PKI_*` variable
//! (the configuration reference lists them from here).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "The private PKI of a ctr deployment")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Generate a CA chain and leaves into DIR; when DIR already holds one, renew its leaves
    /// that expire within --renew-within (or name other hosts), and issue missing ones.
    Init(Init),
}

/// Generate a CA chain and leaves into DIR; when DIR already holds one, renew its leaves
/// that expire within --renew-within (or name other hosts), and issue missing ones.
#[derive(clap::Args)]
pub struct Init {
    /// Where to write the files.
    #[arg(long, env = "CTR_PKI_OUT")]
    pub out: PathBuf,
    /// Certificates in a chain, root and leaf included.
    #[arg(long, default_value_t = 3, env = "CTR_PKI_TIERS")]
    pub tiers: u8,
    /// A server leaf: NAME or NAME=extra.dns,other.dns (SANs NAME, localhost, 127.0.0.1, extras).
    #[arg(long = "service", value_name = "NAME[=DNS,...]")]
    pub services: Vec<String>,
    /// A client (mTLS) leaf named NAME.
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
    /// Replace an existing PKI in DIR (a new root: every client must trust it).
    #[arg(long)]
    pub force: bool,
    /// How long a new leaf is valid (e.g. 90d, 12h, 1m).
    #[arg(long, default_value = "90d", value_name = "DURATION", value_parser = humantime::parse_duration, env = "CTR_PKI_LEAF_VALIDITY")]
    pub leaf_validity: Duration,
    /// Renew an existing leaf that expires within this long.
    #[arg(long, default_value = "30d", value_name = "DURATION", value_parser = humantime::parse_duration, env = "CTR_PKI_RENEW_WITHIN")]
    pub renew_within: Duration,
    /// Renew every leaf now, however long it has left (new keys too).
    #[arg(long, env = "CTR_PKI_RENEW_ALL")]
    pub renew_all: bool,
    /// Keep running, and do all of the above again every DURATION (a renewer beside a
    /// running stack).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, env = "CTR_PKI_EVERY")]
    pub every: Option<Duration>,
    /// Give every written file to UID:GID (containers that run as a non-root user).
    #[arg(long, value_name = "UID:GID", env = "CTR_PKI_CHOWN")]
    pub chown: Option<String>,
    /// Also copy the root CA certificate to this path (for curl on the host).
    #[arg(long, value_name = "PATH", env = "CTR_PKI_EXPORT_ROOT")]
    pub export_root: Option<PathBuf>,
    /// Also print the root CA certificate (PEM) on standard output, where no file can be
    /// exported (a Kubernetes Job's log).
    #[arg(long)]
    pub print_root: bool,
    /// Give the exported root CA and the directory it is in to UID:GID (the host user who
    /// runs compose, so that they can read and delete it without root). It is always
    /// readable by everyone: it is a public certificate.
    #[arg(long, value_name = "UID:GID", env = "CTR_PKI_EXPORT_OWNER")]
    pub export_owner: Option<String>,
    /// Copy what service NAME may see into DIR, and nothing else: the trust anchors and
    /// NAME's own certificates and keys (its volume; no container mounts the whole PKI).
    #[arg(long = "deliver", value_name = "NAME=DIR")]
    pub deliveries: Vec<String>,
    /// A Standard Webhooks signing secret NAME (`whsec_` and 32 random bytes), made once and
    /// kept, shared by the services listed (its sender and its receiver): each finds it in
    /// its own directory as `webhook-NAME.key`, delivered with its keys.
    #[arg(long = "webhook-secret", value_name = "NAME=SERVICE,SERVICE")]
    pub webhook_secrets: Vec<String>,
}
