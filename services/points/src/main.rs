use std::process::ExitCode;
use std::sync::Arc;

use ctr_token::SystemClock;
use points::PointsSettings;

fn main() -> ExitCode {
    ctr_service_kit::main_with("points", PointsSettings::default(), |config| async move {
        Ok(points::build(&config, Arc::new(SystemClock)).await?.app)
    })
}
