//! `<domain> keys`: the operator's view of the domain's signing key in its KMS, with the
//! service's own settings and credentials, while the service runs.
//!
//! ```text
//! coupons keys              list the published versions, the primary first
//! coupons keys rotate       add a version: the domain signs with it within CTR_KMS__REFRESH
//! coupons keys retire KID   stop publishing a version (never the primary)
//! ```

use std::process::ExitCode;

use ctr_kms::{KeyVersion, KmsConfig};
use ctr_service_kit::{Config, ServiceSettings};

use crate::DomainSettings;

const USAGE: &str = "usage: DOMAIN keys [list | rotate | retire KID]
  list         the published versions of the domain's signing key, the primary first
  rotate       add a version, which becomes the primary
  retire KID   stop publishing and signing with a version (never the primary); retire a
               version only once no token it signed can still be alive (CTR_TOKEN_TTL)";

/// Runs `keys ...` for domain `name`; `args` follow `keys`.
pub fn main<S: ServiceSettings + AsRef<DomainSettings>>(
    name: &'static str,
    defaults: S,
    args: &[String],
) -> ExitCode {
    let command: Vec<&str> = args.iter().map(String::as_str).collect();
    if !matches!(
        command.as_slice(),
        [] | ["list"] | ["rotate"] | ["retire", _]
    ) {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let config = match Config::load(name, defaults) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    let kms = match config.service.as_ref().kms_backend() {
        Ok(kms) => kms.clone(),
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::from(2);
        }
    };
    if matches!(kms, KmsConfig::Mock { .. }) {
        eprintln!(
            "{name}: the mock KMS keeps its keys inside the running service; rotation is for a real backend (guide: Signing keys and the KMS)"
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let key_id = format!("{name}-signing");
    let outcome = runtime.block_on(async {
        let kms = kms.build().await?;
        match command.as_slice() {
            ["rotate"] => {
                let version = kms.rotate(&key_id).await?;
                println!("{version}");
            }
            ["retire", kid] => kms.disable_version(&key_id, &KeyVersion::new(*kid)).await?,
            _ => {
                for key in kms.public_keys(&key_id).await? {
                    println!("{}", key.version);
                }
            }
        }
        Ok::<_, ctr_kms::KmsError>(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {key_id}: {error}");
            ExitCode::FAILURE
        }
    }
}
