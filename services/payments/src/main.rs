use std::process::ExitCode;
use std::sync::Arc;

use ctr_domain_kit::DomainSettings;
use ctr_token::SystemClock;

fn main() -> ExitCode {
    ctr_domain_kit::main("payments", DomainSettings::default(), |config| async move {
        Ok(payments::build(&config, Arc::new(SystemClock)).await?.app)
    })
}
