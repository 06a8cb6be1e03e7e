use std::process::ExitCode;
use std::sync::Arc;

use ctr_token::SystemClock;
use points::PointsSettings;

fn main() -> ExitCode {
    ctr_domain_kit::main("points", PointsSettings::default(), |config| async move {
        Ok(points::build(&config, Arc::new(SystemClock)).await?.app)
    })
}
