use std::process::ExitCode;
use std::sync::Arc;

use ctr_token::SystemClock;
use order_processing::RelaySettings;

fn main() -> ExitCode {
    ctr_service_kit::main_with(
        "order-processing",
        RelaySettings::default(),
        |config| async move {
            Ok(order_processing::build(&config, Arc::new(SystemClock))
                .await?
                .app)
        },
    )
}
