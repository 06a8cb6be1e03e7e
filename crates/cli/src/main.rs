//! `ctr`: the command-line client of a running ctr stack. `ctr demo` walks through every
//! scenario; the other commands are its building blocks. Exit codes: 0 as expected, 1 when a
//! scenario deviated or the service answered a problem, 2 on a usage or connection error.

use ctr_cli::{api, demo, listen, token};

use std::io::Read as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use api::{Answer, Domain, Endpoints, Stack, Unreachable};

#[derive(Parser)]
#[command(
    name = "ctr",
    version,
    about = "Drive a running ctr stack: a guided demo, orders, confirmations, checkout"
)]
struct Cli {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the happy path and every failure scenario, checking each answer.
    Demo {
        /// Print the scenarios as JSON on stdout (progress goes to stderr).
        #[arg(long)]
        json: bool,
    },
    /// Open or show an order at the relay.
    #[command(subcommand)]
    Order(OrderCommand),
    /// Confirm a choice with a domain: it places a hold and answers a token.
    Confirm {
        domain: Domain,
        /// The order the token is for.
        #[arg(long)]
        order: String,
        /// coupons: the coupon code.
        #[arg(long, required_if_eq("domain", "coupons"))]
        code: Option<String>,
        /// points: how many points.
        #[arg(long, required_if_eq("domain", "points"))]
        points: Option<u64>,
        /// payments: the payment method.
        #[arg(long, required_if_eq("domain", "payments"))]
        method: Option<String>,
        /// coupons: the order total; payments: the amount. In minor units (4999 is 49.99).
        #[arg(long, required_if_eq_any([("domain", "coupons"), ("domain", "payments")]))]
        amount: Option<u64>,
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// Print only the token (for a shell variable).
        #[arg(long)]
        token_only: bool,
    },
    /// Check out an order with tokens (arguments, or one per line on stdin with `-`).
    Checkout {
        order: String,
        #[arg(required = true)]
        tokens: Vec<String>,
    },
    /// Work with a token offline.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Get an access token for `--customer` from the issuer (client credentials) and print
    /// it: `export CTR_ACCESS_TOKEN=$(ctr login --customer c_bob)`. With DPoP (the default)
    /// the token is bound to the customer's key in the key directory, where later commands
    /// find it.
    Login,
    /// Receive the relay's order events over HTTPS (POST /webhooks): verify each delivery as
    /// Standard Webhooks says, print each event once as a JSON line, list them at GET /events.
    Listen(listen::Listen),
    /// Print a DPoP proof for one request with CTR_ACCESS_TOKEN's key (found by its
    /// `cnf.jkt` in the key directory), for curl: `-H "DPoP: $(ctr proof POST <url>)"`.
    Proof {
        /// The request's method (`POST`).
        method: String,
        /// The request's URL, exactly as the request addresses it.
        url: String,
    },
}

#[derive(Subcommand)]
enum OrderCommand {
    /// Open an order; prints it (its `order_processing_id` is what the other commands take).
    Create {
        /// The total in minor units (4999 is 49.99).
        #[arg(long)]
        amount: u64,
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// Print only the order's id (for a shell variable).
        #[arg(long)]
        id_only: bool,
    },
    /// Show an order: its status, tokens and what they settled.
    Show { order: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Decode a token's header and claims without trusting them (the signature is not shown).
    Inspect {
        /// The token, or `-` to read it from stdin.
        token: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Token(TokenCommand::Inspect { token }) = &cli.command {
        return inspect(token);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return usage_error(&e.to_string()),
    };
    if let Command::Listen(listen) = cli.command {
        return match runtime.block_on(listen::run(listen, cli.endpoints.ca)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => usage_error(&message),
        };
    }
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(Unreachable(message)) => usage_error(&message),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("ctr: {message}");
    ExitCode::from(2)
}

fn read_stdin() -> String {
    let mut input = String::new();
    let _ = std::io::stdin().read_to_string(&mut input);
    input
}

fn inspect(token: &str) -> ExitCode {
    let token = if token == "-" {
        read_stdin()
    } else {
        token.to_owned()
    };
    match token::inspect(&token) {
        Ok(shown) => {
            print_json(&shown);
            ExitCode::SUCCESS
        }
        Err(e) => usage_error(&e),
    }
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// Prints an answer: the body on stdout when it succeeded, the problem on stderr (exit 1).
fn report(answer: &Answer, only: Option<&str>) -> ExitCode {
    if answer.ok() {
        match only {
            Some(field) => println!("{}", answer.field(field)),
            None => print_json(&answer.body),
        }
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{}",
            serde_json::to_string_pretty(&answer.body).unwrap_or_default()
        );
        ExitCode::from(1)
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Unreachable> {
    let stack = Stack::connect(cli.endpoints)?;
    Ok(match cli.command {
        Command::Demo { json } => {
            let scenarios = demo::run(&stack, json).await?;
            if json {
                print_json(&json!({
                    "ok": scenarios.iter().all(|s| s.ok),
                    "scenarios": scenarios,
                }));
            } else {
                print!("{}", demo::summary(&scenarios));
            }
            if scenarios.iter().all(|s| s.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Order(OrderCommand::Create {
            amount,
            currency,
            id_only,
        }) => {
            let answer = stack.create_order(amount, &currency).await?;
            report(&answer, id_only.then_some("order_processing_id"))
        }
        Command::Order(OrderCommand::Show { order }) => report(&stack.order(&order).await?, None),
        Command::Confirm {
            domain,
            order,
            code,
            points,
            method,
            amount,
            currency,
            token_only,
        } => {
            let money = json!({"amount": amount, "currency": currency});
            let details = match domain {
                Domain::Coupons => json!({"coupon_code": code, "order_total": money}),
                Domain::Points => json!({"points": points, "currency": currency}),
                Domain::Payments => json!({"payment_method_id": method, "amount": money}),
            };
            let answer = stack.confirm(domain, &order, details).await?;
            report(&answer, token_only.then_some("token"))
        }
        Command::Checkout { order, tokens } => {
            let tokens: Vec<String> = if tokens == ["-"] {
                read_stdin()
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            } else {
                tokens
            };
            report(&stack.checkout(&order, &tokens).await?, None)
        }
        Command::Token(_) | Command::Listen(_) => ExitCode::SUCCESS,
        Command::Proof { method, url } => {
            println!("{}", stack.proof(&method.to_ascii_uppercase(), &url)?);
            ExitCode::SUCCESS
        }
        Command::Login => {
            let customer = stack.endpoints.customer.clone();
            println!("{}", stack.login(&customer).await?.token);
            ExitCode::SUCCESS
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_confirmation_takes_its_own_flags_beside_the_service_urls() {
        let cli = Cli::try_parse_from([
            "ctr",
            "--points-url",
            "https://points:8443",
            "confirm",
            "points",
            "--order",
            "op_x",
            "--points",
            "500",
        ])
        .unwrap();
        assert_eq!(cli.endpoints.points_url, "https://points:8443");
        assert!(matches!(
            cli.command,
            Command::Confirm {
                domain: Domain::Points,
                points: Some(500),
                ..
            }
        ));
        let missing = Cli::try_parse_from(["ctr", "confirm", "coupons", "--order", "op_x"]);
        assert!(missing.is_err(), "coupons need --code and --amount");
    }
}
