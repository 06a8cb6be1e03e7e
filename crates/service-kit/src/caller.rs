//! Authorising callers by the client certificate verified during the TLS handshake.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use crate::{ApiError, PeerCertificates};

/// The identity the relay's client certificate names.
pub const RELAY_IDENTITY: &str = "order-processing";

/// Extracts only for a caller whose client certificate (verified against our root) names
/// `order-processing`: the consumer endpoints of the domains require it.
#[derive(Debug, Clone, Copy)]
pub struct RelayCaller;

impl<S: Send + Sync> FromRequestParts<S> for RelayCaller {
    type Rejection = ApiError;

    #[tracing::instrument(skip_all)]
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(PeerCertificates(chain)) = parts.extensions.get::<PeerCertificates>() else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "client-certificate-required",
                "Client certificate required",
                "this endpoint is for the order-processing relay and needs its client certificate (mTLS)",
            ));
        };
        match chain.first() {
            Some(leaf) if ctr_pki::certificate_names(leaf, RELAY_IDENTITY) => Ok(Self),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "caller-not-authorized",
                "Caller not authorized",
                "the client certificate does not name order-processing",
            )),
        }
    }
}
