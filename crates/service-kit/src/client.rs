//! Outgoing HTTPS: reqwest over our TLS 1.3 config, with trace context on every request.

use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use ctr_pki::{IdentityFiles, TlsFiles};
use tracing::Instrument as _;

use crate::config::ConfigError;

/// An HTTPS client that trusts only `root`, presents `identity` if given, times out, and
/// never follows a redirect: a redirect would carry a token (or the relay's certificate's
/// authority) to another host, so a 3xx is answered as it is.
pub fn https_client(
    root: &Path,
    identity: Option<&IdentityFiles>,
    timeout: Duration,
) -> Result<reqwest::Client, ConfigError> {
    let files = TlsFiles::load(root, identity).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    https_client_following(&files, timeout)
}

/// As [`https_client`], over TLS files that may be reloaded
/// ([`crate::watch_certificates`]): each new connection uses the root and identity of the
/// last reload.
pub fn https_client_following(
    files: &Arc<TlsFiles>,
    timeout: Duration,
) -> Result<reqwest::Client, ConfigError> {
    ctr_pki::reqwest_builder_following(files)
        .map_err(|e| ConfigError::Invalid(e.to_string()))?
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ConfigError::Invalid(format!("the HTTPS client could not be built: {e}")))
}

/// Sends `request` in a client span whose trace context it carries (`traceparent`).
pub async fn send_traced(
    mut request: reqwest::Request,
    client: &reqwest::Client,
) -> reqwest::Result<reqwest::Response> {
    let span = crate::telemetry::client_span(&request);
    span.in_scope(|| crate::telemetry::inject_trace_context(request.headers_mut()));
    let result = client.execute(request).instrument(span.clone()).await;
    match &result {
        Ok(response) => crate::telemetry::record_response(&span, response.status().as_u16()),
        Err(_) => {
            span.record("otel.status_code", "ERROR");
        }
    }
    result
}
