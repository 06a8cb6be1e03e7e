use std::process::ExitCode;
use std::sync::Arc;

use ctr_domain_kit::DomainSettings;
use ctr_token::SystemClock;

fn main() -> ExitCode {
    ctr_service_kit::main_with("points", DomainSettings::default(), |config| async move {
        Ok(points::build(&config, Arc::new(SystemClock)).await?.app)
    })
}
