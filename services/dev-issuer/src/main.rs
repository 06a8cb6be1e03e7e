use std::process::ExitCode;

fn main() -> ExitCode {
    ctr_service_kit::main_with(
        "dev-issuer",
        dev_issuer::DevIssuerSettings::default(),
        |config| async move {
            Ok(dev_issuer::build(&config.server, &config.service)
                .await?
                .app)
        },
    )
}
