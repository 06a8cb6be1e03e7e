//! `ctr-load`: complete checkout flows with concurrent virtual customers, against the services
//! started in this process on loopback (default) or a running deployment (`--relay` ...).
//! Bounded by a flow count and a duration; reports throughput, latency percentiles per step,
//! errors by problem type, and achieved / crypto bound.

mod bound;
mod flow;
mod stack;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

/// Base URLs of the four services.
#[derive(Debug, Clone)]
pub struct Targets {
    pub relay: String,
    pub coupons: String,
    pub points: String,
    pub payments: String,
    /// Each virtual customer's credentials (`c_load_<i>`), by index.
    pub tokens: std::sync::Arc<Vec<Credential>>,
    /// Whether every POST carries a fresh `Idempotency-Key`.
    pub keys: Keys,
}

/// Whether the flows' POSTs carry an `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Keys {
    Off,
    On,
}

/// A virtual customer's access token and, when it is DPoP-bound, its key.
#[derive(Debug, Clone)]
pub struct Credential {
    pub token: String,
    pub key: Option<std::sync::Arc<ctr_access::dpop::ProofKey>>,
}

/// How the virtual customers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Auth {
    /// Bearer access tokens.
    Bearer,
    /// DPoP-bound access tokens (a P-256 key each) and a proof with every request.
    Dpop,
}

impl Keys {
    /// The suffix of a run's name.
    fn suffix(self) -> &'static str {
        match self {
            Self::Off => "",
            Self::On => "+keys",
        }
    }

    /// A new request's `Idempotency-Key` header value, when this mode sends one.
    pub fn fresh(self) -> Option<reqwest::header::HeaderValue> {
        (self == Self::On)
            .then(|| ctr_service_kit::idempotency::IdempotencyKey::fresh().header_value())
    }
}

impl Auth {
    /// A new key for a customer, when this mode has one.
    pub fn key(self) -> Result<Option<std::sync::Arc<ctr_access::dpop::ProofKey>>, String> {
        match self {
            Self::Bearer => Ok(None),
            Self::Dpop => ctr_access::dpop::ProofKey::generate(jsonwebtoken::Algorithm::ES256)
                .map(|k| Some(std::sync::Arc::new(k)))
                .map_err(|e| e.to_string()),
        }
    }

    /// The suffix of a run's name.
    fn suffix(self) -> &'static str {
        match self {
            Self::Bearer => "",
            Self::Dpop => "+dpop",
        }
    }
}

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Virtual customers, each running flows one after another (1 to 1024).
    #[arg(long, default_value_t = 8)]
    customers: usize,
    /// Stop after this many flows in all (at most 1 000 000) ...
    #[arg(long, default_value_t = 2000)]
    flows: usize,
    /// ... or after this many seconds (at most 600), whichever comes first.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Drive a running deployment: relay, coupons, points, payments base URLs, comma-separated
    /// (loopback or compose service names only). Its domains need the seed of `--write-seeds`.
    #[arg(long, value_delimiter = ',')]
    targets: Option<Vec<String>>,
    /// The root CA of that deployment (e.g. .ctr/root.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The deployment's token issuer: each virtual customer `c_load_<i>` logs in there with the
    /// client-credentials grant (the compose stack's development issuer knows them).
    #[arg(long, default_value = "https://127.0.0.1:8447")]
    issuer: String,
    /// The virtual customers' client secret at that issuer.
    #[arg(
        long,
        env = "CTR_CLIENT_SECRET",
        default_value = "demo-secret",
        hide_default_value = true
    )]
    client_secret: String,
    /// Write the seed files for `--customers` virtual customers to DIR and exit.
    #[arg(long, value_name = "DIR")]
    write_seeds: Option<PathBuf>,
    /// The in-process services' stores, comma-separated, each run in turn and compared with
    /// the first: `memory` (SQLite in memory), `sqlite` (a file per service, as users run it; `sqlite-normal` the same with synchronous=NORMAL)
    /// or a `postgres://` URL (a database per service on that server).
    #[arg(long, value_delimiter = ',', default_value = "sqlite")]
    store: Vec<stack::StoreChoice>,
    /// How the virtual customers authenticate, comma-separated, each run in turn for every
    /// store: `bearer` tokens, or `dpop` (tokens bound to a key per customer, a proof signed
    /// per request and checked, and recorded once, by every service).
    #[arg(long, value_delimiter = ',', default_value = "bearer")]
    auth: Vec<Auth>,
    /// Send a fresh `Idempotency-Key` with every POST: `--idempotency` alone, or
    /// `--idempotency off,on` to run every configuration without and then with keys (their
    /// cost, as a ratio in one run).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "off",
        num_args = 0..,
        default_missing_value = "on"
    )]
    idempotency: Vec<Keys>,
    /// Run the virtual customers on a runtime of their own (threads `ctr-load-gen`), for
    /// profiles (docs/bench/profile.sh); slower than the default shared runtime.
    #[arg(long)]
    own_runtime: bool,
    /// Where the in-process services' log lines go: they log as deployed (JSON at `info`).
    #[arg(long, value_name = "FILE", default_value = "/dev/null")]
    service_log: PathBuf,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

const ALLOWED_HOSTS: [&str; 7] = [
    "127.0.0.1",
    "localhost",
    "[::1]",
    "order-processing",
    "coupons",
    "points",
    "payments",
];

fn allowed(url: &str) -> bool {
    let host = url
        .strip_prefix("https://")
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or("");
    let host = if url.contains("://[::1]") {
        "[::1]"
    } else {
        host
    };
    ALLOWED_HOSTS.contains(&host)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !(1..=1024).contains(&cli.customers)
        || !(1..=stack::MAX_FLOWS).contains(&cli.flows)
        || !(1..=600).contains(&cli.seconds)
    {
        eprintln!(
            "ctr-load: --customers 1..=1024, --flows 1..={}, --seconds 1..=600",
            stack::MAX_FLOWS
        );
        return ExitCode::from(2);
    }
    if let Some(dir) = &cli.write_seeds {
        return match std::fs::create_dir_all(dir)
            .and_then(|()| stack::write_seeds(dir, cli.customers))
        {
            Ok(()) => {
                println!(
                    "wrote coupons.json, points.json and payments.json for {} customers to {}",
                    cli.customers,
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ctr-load: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // With --own-runtime the virtual customers run on a runtime of their own (threads named
    // ctr-load-gen, the services' ctr-services), so that a profile tells the load
    // generator's share from the services'. It costs some throughput (every answer is a
    // wake-up across runtimes), so measurements share one runtime.
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(name)
            .build()
    };
    let services = runtime("ctr-services");
    let customers = cli.own_runtime.then(|| runtime("ctr-load-gen")).transpose();
    let (services, customers) = match (services, customers) {
        (Ok(services), Ok(customers)) => (services, customers),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("ctr-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = customers.as_ref().unwrap_or(&services).handle().clone();
    // The in-process services log as deployed (JSON lines at `info`), to --service-log.
    let telemetry = match cli.targets {
        Some(_) => None,
        None => match service_telemetry(&cli.service_log) {
            Ok(telemetry) => Some(telemetry),
            Err(e) => {
                eprintln!("ctr-load: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let outcome = services.block_on(run(cli, handle));
    drop(services);
    drop(telemetry);
    match outcome {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("ctr-load: {failed} flows failed (see `errors` in the report)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("ctr-load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every requested store and reports; answers how many flows failed in all.
/// Each virtual customer's access token from `--issuer` (client credentials), bound to a key
/// of its own under `auth`.
async fn log_in(
    client: &reqwest::Client,
    cli: &Cli,
    auth: Auth,
) -> Result<Vec<Credential>, String> {
    let issuer = cli.issuer.trim_end_matches('/');
    let mut tokens = Vec::with_capacity(cli.customers);
    for customer in 0..cli.customers {
        let client_id = format!("c_load_{customer}");
        let key = auth.key()?;
        let token = ctr_access::client_credentials(
            client,
            &format!("{issuer}/token"),
            &client_id,
            &cli.client_secret,
            None,
            key.as_deref(),
        )
        .await
        .map_err(|e| format!("{issuer}: {e}"))?;
        tokens.push(Credential { token, key });
    }
    Ok(tokens)
}

/// `customers` runs the virtual customers.
async fn run(cli: Cli, customers: tokio::runtime::Handle) -> Result<u64, String> {
    // The bound first, on an idle machine.
    let bound = bound::measure()?;
    let mut reports = Vec::new();
    match (&cli.targets, &cli.ca) {
        (Some(urls), Some(ca)) => {
            if urls.len() != 4 {
                return Err("--targets takes four URLs: relay,coupons,points,payments".into());
            }
            if let Some(bad) = urls.iter().find(|u| !allowed(u)) {
                return Err(format!(
                    "{bad}: only loopback or the compose network may be targeted"
                ));
            }
            let client = ctr_service_kit::https_client(ca, None, Duration::from_secs(30))
                .map_err(|e| e.to_string())?;
            for &auth in &cli.auth {
                let tokens = std::sync::Arc::new(log_in(&client, &cli, auth).await?);
                for &keys in &cli.idempotency {
                    let targets = Targets {
                        relay: urls[0].clone(),
                        coupons: urls[1].clone(),
                        points: urls[2].clone(),
                        payments: urls[3].clone(),
                        tokens: tokens.clone(),
                        keys,
                    };
                    let name = format!("deployment{}{}", auth.suffix(), keys.suffix());
                    reports.push(drive(&cli, &name, &targets, &client, &bound, &customers).await);
                }
            }
        }
        (Some(_), None) => return Err("--targets needs --ca".into()),
        _ => {
            let runs: Vec<_> = cli
                .store
                .iter()
                .flat_map(|store| cli.auth.iter().map(move |auth| (store, *auth)))
                .flat_map(|(store, auth)| {
                    cli.idempotency.iter().map(move |keys| (store, auth, *keys))
                })
                .collect();
            for (store, auth, keys) in runs {
                let stack = stack::InProcess::start(cli.customers, store, auth)
                    .await
                    .map_err(|e| e.to_string())?;
                let client = stack.pki.client(None);
                let name = format!("{}{}{}", store.name(), auth.suffix(), keys.suffix());
                let targets = Targets {
                    keys,
                    ..stack.targets.clone()
                };
                reports.push(drive(&cli, &name, &targets, &client, &bound, &customers).await);
            }
        }
    }
    for report in &reports {
        print_report(report);
    }
    if reports.len() > 1 {
        let first = &reports[0];
        let rate = |r: &serde_json::Value| r["flows_per_second"].as_f64().unwrap_or(0.0);
        println!(
            "flows/s relative to {}:",
            first["store"].as_str().unwrap_or("")
        );
        for report in &reports {
            println!(
                "  {:<9} {:.3}",
                report["store"].as_str().unwrap_or(""),
                rate(report) / rate(first)
            );
        }
    }
    if let Some(path) = &cli.json {
        let json = if reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0])
        } else {
            serde_json::to_string_pretty(&reports)
        };
        std::fs::write(path, json.unwrap_or_default())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(reports
        .iter()
        .map(|r| r["flows_failed"].as_u64().unwrap_or(0))
        .sum())
}

/// The services' telemetry as `main_with` installs it (default settings: JSON lines at
/// `info`, no span export unless OTEL_* says so), writing to `path`.
fn service_telemetry(
    path: &std::path::Path,
) -> Result<ctr_service_kit::telemetry::Telemetry, String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut server = ctr_service_kit::ServerConfig::defaults("ctr-load");
    server.log_format = ctr_service_kit::config::LogFormat::Json;
    let writer = tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(file));
    ctr_service_kit::telemetry::init_to("ctr-load", &server, writer).map_err(|e| e.to_string())
}

/// User and system CPU time of this process so far (Linux: /proc/self/stat).
fn process_cpu_seconds() -> Option<f64> {
    stat_cpu_seconds(std::path::Path::new("/proc/self"))
}

/// The user and system CPU time of the process at `proc_dir` (`/proc/<pid>`), in seconds;
/// `None` when it cannot be read (the process ended).
fn stat_cpu_seconds(proc_dir: &std::path::Path) -> Option<f64> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux ABI Rust targets.
    Some(ticks / 100.0)
}

/// CPU time of each process of the PostgreSQL server on this machine (Linux: every
/// `postgres` process's user and system time, in seconds, by pid); empty when none runs here.
fn postgres_cpu() -> BTreeMap<u32, f64> {
    let mut cpu = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return cpu;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if std::fs::read_to_string(path.join("comm")).map_or(true, |c| c.trim() != "postgres") {
            continue;
        }
        if let Some(seconds) = stat_cpu_seconds(&path) {
            cpu.insert(pid, seconds);
        }
    }
    cpu
}

/// The PostgreSQL server's CPU seconds between two [`postgres_cpu`] readings: what each
/// process used since the first (all of it for a process started since). A process that ended
/// in between is not counted (its connection's pool replaced it): `None` when no server runs.
fn postgres_cpu_since(before: &BTreeMap<u32, f64>) -> Option<f64> {
    let after = postgres_cpu();
    (!after.is_empty()).then(|| {
        after
            .iter()
            .map(|(pid, now)| now - before.get(pid).copied().unwrap_or(0.0))
            .sum()
    })
}

/// Context switches of this process's threads so far (Linux: /proc/self/task/*/status),
/// voluntary and not: each hand-off between threads costs one.
fn context_switches() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(total)
}

/// One line a second on stderr while flows run: done, failed, rate, time left.
async fn progress(
    store: String,
    done: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    total: usize,
    deadline: Instant,
) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let (n, f) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        eprintln!(
            "[{store}] {n}/{total} flows, {f} failed, {:.0}/s, {}s left",
            n as f64 / started.elapsed().as_secs_f64(),
            deadline.saturating_duration_since(Instant::now()).as_secs()
        );
    }
}

/// Runs the customers' flows against `targets` until the flow budget or the time is spent.
async fn drive(
    cli: &Cli,
    store: &str,
    targets: &Targets,
    client: &reqwest::Client,
    bound: &bound::CryptoBound,
    runtime: &tokio::runtime::Handle,
) -> serde_json::Value {
    let cpu_before = process_cpu_seconds();
    let postgres_before = postgres_cpu();
    let switches_before = context_switches();
    let store_before = ctr_store::stats();
    let budget = Arc::new(AtomicUsize::new(cli.flows));
    let deadline = Instant::now() + Duration::from_secs(cli.seconds);
    let started = Instant::now();
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reporter = tokio::spawn(progress(
        store.to_owned(),
        done.clone(),
        failed.clone(),
        cli.flows,
        deadline,
    ));
    let customers = (0..cli.customers).map(|customer| {
        let (budget, targets, client) = (budget.clone(), targets.clone(), client.clone());
        let (done, failed) = (done.clone(), failed.clone());
        runtime.spawn(async move {
            let mut outcomes = Vec::new();
            while Instant::now() < deadline
                && budget
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                let outcome = flow::run(&client, &targets, customer).await;
                if outcome.error.is_some() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
                outcomes.push(outcome);
            }
            outcomes
        })
    });
    let outcomes: Vec<flow::Outcome> = futures::future::join_all(customers)
        .await
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    let elapsed = started.elapsed();
    let cpu = process_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let postgres_cpu = postgres_cpu_since(&postgres_before);
    let switches = context_switches()
        .zip(switches_before)
        .map(|(after, before)| after.saturating_sub(before));
    let store_work = ctr_store::stats() - store_before;
    reporter.abort();
    let per_flow = |n: u64| n as f64 / outcomes.len().max(1) as f64;

    let steps = flow::by_step(&outcomes, elapsed);
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for error in outcomes.iter().filter_map(|o| o.error.clone()) {
        *errors.entry(error).or_default() += 1;
    }
    let achieved = steps["flow"].per_second;
    json!({
        "store": store,
        "customers": cli.customers,
        "elapsed_seconds": elapsed.as_secs_f64(),
        "flows_completed": steps["flow"].count,
        "flows_failed": outcomes.len() - steps["flow"].count,
        "flows_per_second": achieved,
        "crypto_bound": bound,
        "achieved_over_bound": achieved / bound.flows_per_second,
        "achieved_over_own_bound": achieved / bound.own_flows_per_second,
        // This process's CPU time while the flows ran (services and customers in process;
        // the customers alone against a deployment), per flow.
        "process_cpu_ms_per_flow": cpu.map(|cpu| 1e3 * cpu / outcomes.len().max(1) as f64),
        "context_switches_per_flow": switches.map(per_flow),
        // The PostgreSQL server's CPU time per flow, when one runs on this machine (whatever
        // else uses it counts too: keep the machine otherwise idle).
        "postgres_cpu_ms_per_flow": postgres_cpu.map(|cpu| 1e3 * cpu / outcomes.len().max(1) as f64),
        // What the in-process services asked of their stores (nothing against a deployment).
        "store_per_flow": {
            "transactions": per_flow(store_work.transactions),
            "statements": per_flow(store_work.statements),
            "commits": per_flow(store_work.commits),
            "postgres_round_trips": per_flow(store_work.round_trips),
            // Pipelined operations run again because a guarded write did not hold.
            "postgres_reruns": per_flow(store_work.reruns),
        },
        "steps": steps,
        "errors": errors,
    })
}

fn print_report(r: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    println!(
        "store {}: achieved / crypto bound: {:.3}",
        r["store"].as_str().unwrap_or(""),
        f(&r["achieved_over_bound"])
    );
    println!(
        "flows: {} in {:.1} s = {:.1}/s with {} customers; bound {:.1}/s ({} cores, {:.0} signs/s, {:.0} verifies/s per core)",
        r["flows_completed"],
        f(&r["elapsed_seconds"]),
        f(&r["flows_per_second"]),
        r["customers"],
        f(&r["crypto_bound"]["flows_per_second"]),
        r["crypto_bound"]["cores"],
        f(&r["crypto_bound"]["signs_per_second_per_core"]),
        f(&r["crypto_bound"]["verifies_per_second_per_core"])
    );
    println!(
        "the flow's own crypto (3 signs, 3 verifies): bound {:.1}/s, achieved / it: {:.3}",
        f(&r["crypto_bound"]["own_flows_per_second"]),
        f(&r["achieved_over_own_bound"])
    );
    if let Some(cpu) = r["process_cpu_ms_per_flow"].as_f64() {
        println!(
            "per flow: {cpu:.2} ms CPU, {:.0} context switches, store: {:.1} transactions, {:.1} statements, {:.2} commits",
            f(&r["context_switches_per_flow"]),
            f(&r["store_per_flow"]["transactions"]),
            f(&r["store_per_flow"]["statements"]),
            f(&r["store_per_flow"]["commits"])
        );
    }
    if let Some(cpu) = r["postgres_cpu_ms_per_flow"]
        .as_f64()
        .filter(|_| f(&r["store_per_flow"]["postgres_round_trips"]) > 0.0)
    {
        println!(
            "PostgreSQL per flow: {cpu:.2} ms CPU (the server's processes), {:.1} round trips, {:.3} operations run again",
            f(&r["store_per_flow"]["postgres_round_trips"]),
            f(&r["store_per_flow"]["postgres_reruns"])
        );
    }
    println!(
        "{:<9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "step", "count", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for step in flow::STEPS {
        let s = &r["steps"][step];
        println!(
            "{:<9} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            step,
            s["count"].as_u64().unwrap_or(0),
            f(&s["per_second"]),
            f(&s["p50_ms"]),
            f(&s["p90_ms"]),
            f(&s["p99_ms"]),
            f(&s["max_ms"])
        );
    }
    if let Some(errors) = r["errors"].as_object().filter(|e| !e.is_empty()) {
        println!("errors: {}", serde_json::Value::Object(errors.clone()));
    }
}
