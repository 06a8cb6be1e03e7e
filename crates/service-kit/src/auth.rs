//! Customers, authenticated: every customer-facing route takes a [`Customer`], which extracts
//! only with a valid access token from the configured issuer (`CTR_AUTH_*`, verified by
//! ctr-access) and before the body is read, so a refused request does no work and counts
//! against no customer.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use ctr_access::{Access, AccessError, AccessVerifier};

use crate::config::ConfigError;
use crate::{ApiError, CustomerId, Health, ServerConfig, StartError};

/// The scopes the routes need. A token grants what its space-separated `scope` names.
pub mod scopes {
    /// Open orders and check them out.
    pub const ORDERS_WRITE: &str = "orders:write";
    /// Read one's orders.
    pub const ORDERS_READ: &str = "orders:read";
    pub const COUPONS_CONFIRM: &str = "coupons:confirm";
    pub const COUPONS_READ: &str = "coupons:read";
    pub const POINTS_CONFIRM: &str = "points:confirm";
    pub const POINTS_READ: &str = "points:read";
    pub const PAYMENTS_CONFIRM: &str = "payments:confirm";
    pub const PAYMENTS_READ: &str = "payments:read";
    /// Everything a customer does in a checkout.
    pub const ALL: [&str; 8] = [
        ORDERS_WRITE,
        ORDERS_READ,
        COUPONS_CONFIRM,
        COUPONS_READ,
        POINTS_CONFIRM,
        POINTS_READ,
        PAYMENTS_CONFIRM,
        PAYMENTS_READ,
    ];
}

/// The realm of every challenge.
const REALM: &str = "ctr";

/// How often the issuer's keys are tried at start until they load.
const KEYS_RETRY: Duration = Duration::from_secs(1);

/// The access-token verifier a service's customer routes share (an axum `Extension`).
#[derive(Clone)]
pub struct CustomerAuth {
    verifier: Arc<AccessVerifier>,
}

impl CustomerAuth {
    /// The verifier for `CTR_AUTH_*`: its HTTPS client trusts `CTR_AUTH_CA_FILE` (or the web
    /// roots), TLS 1.3 only. The issuer's keys are fetched in the background until they load;
    /// until then the `customer-issuer` readiness check fails.
    pub fn from_config(config: &ServerConfig, health: &Health) -> Result<Self, StartError> {
        let settings = &config.access;
        let invalid = |e: ctr_access::SettingError| {
            StartError::Config(ConfigError::Setting {
                setting: e.setting,
                reason: e.reason,
            })
        };
        let http = issuer_client(settings.auth_ca_file.as_deref(), config.request_timeout)?;
        let verifier = Arc::new(AccessVerifier::new(settings, http).map_err(invalid)?);
        let loading = Arc::downgrade(&verifier);
        tokio::spawn(async move {
            while let Some(verifier) = loading.upgrade() {
                if verifier.keys().loaded() {
                    return;
                }
                if let Err(error) = verifier.refresh().await {
                    tracing::warn!(issuer = verifier.issuer(), %error, "customer issuer keys not loaded yet");
                }
                drop(verifier);
                tokio::time::sleep(KEYS_RETRY).await;
            }
        });
        let ready = Arc::downgrade(&verifier);
        health.register("customer-issuer", move || match ready.upgrade() {
            Some(v) if v.keys().loaded() => Ok(format!("keys of {} loaded", v.issuer())),
            Some(v) => Err(format!("the keys of {} are not loaded yet", v.issuer())),
            None => Err("stopped".into()),
        });
        Ok(Self { verifier })
    }

    /// The layer that makes [`Customer`] extract on a router's routes.
    pub fn layer(&self) -> axum::Extension<Self> {
        axum::Extension(self.clone())
    }
}

/// The HTTPS client for the issuer's metadata and keys.
fn issuer_client(
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<reqwest::Client, StartError> {
    let builder = match ca_file {
        Some(ca) => ctr_pki::reqwest_builder(ca, None).map_err(|e| {
            StartError::Config(ConfigError::Setting {
                setting: "CTR_AUTH_CA_FILE",
                reason: e.to_string(),
            })
        })?,
        None => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let tls = rustls::ClientConfig::builder_with_provider(ctr_pki::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| StartError::Service(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            reqwest::Client::builder()
                .https_only(true)
                .tls_backend_preconfigured(tls)
        }
    };
    builder
        .timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| StartError::Service(format!("the issuer's HTTPS client: {e}")))
}

/// The customer a request's access token names; extracts only for a valid token.
#[derive(Debug, Clone)]
pub struct Customer {
    id: CustomerId,
    access: Access,
}

impl Customer {
    /// The authenticated customer.
    pub fn id(&self) -> &CustomerId {
        &self.id
    }

    /// The client the token was issued to.
    pub fn client_id(&self) -> &str {
        &self.access.client_id
    }

    /// `cnf.jkt` when the token is bound to a key (DPoP).
    pub fn key_thumbprint(&self) -> Option<&str> {
        self.access.jkt.as_deref()
    }

    /// The customer, when the token grants `scope`; 403 `insufficient-scope` otherwise.
    pub fn scoped(self, scope: &'static str) -> Result<Self, ApiError> {
        self.access.require(scope).map_err(refused)?;
        Ok(self)
    }

    /// `Ok` when a customer named in a request (a body's `customer_id`) is this one; 403
    /// `customer-mismatch` otherwise: nobody acts for another customer.
    pub fn is(&self, named: Option<&CustomerId>) -> Result<(), ApiError> {
        match named {
            Some(named) if named != &self.id => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "customer-mismatch",
                "Customer mismatch",
                "`customer_id` names another customer than the access token's",
            )),
            _ => Ok(()),
        }
    }
}

/// The problem answering a refused access token, with its `WWW-Authenticate` challenge.
fn refused(error: AccessError) -> ApiError {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let title = match status {
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::BAD_REQUEST => "Bad request",
        StatusCode::SERVICE_UNAVAILABLE => "Issuer unavailable",
        _ => "Unauthorized",
    };
    let mut problem = ApiError::new(status, error.slug(), title, error.to_string());
    problem.challenge = Some(error.challenge(REALM).into());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        problem = problem.retry_after(1);
    }
    problem
}

impl<S: Send + Sync> FromRequestParts<S> for Customer {
    type Rejection = ApiError;

    #[tracing::instrument(name = "authenticate", skip_all)]
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(auth) = parts.extensions.get::<CustomerAuth>().cloned() else {
            return Err(ApiError::internal(
                "a customer route without CustomerAuth's layer",
            ));
        };
        let token = bearer(parts).map_err(refused)?;
        let access = auth.verifier.verify(token).await.map_err(|error| {
            tracing::info!(problem = error.slug(), "access token refused");
            refused(error)
        })?;
        let id = CustomerId::parse(&access.customer).map_err(|_| {
            refused(AccessError::Claims(
                "the customer claim is not a customer id this API accepts (1 to 64 letters, digits, '_' or '-')".into(),
            ))
        })?;
        tracing::debug!(customer_id = %id, client_id = %access.client_id, jti = %access.jti, "customer authenticated");
        Ok(Self { id, access })
    }
}

/// The token of the one `Authorization: Bearer <token>` header (RFC 6750 section 2.1).
fn bearer(parts: &Parts) -> Result<&str, AccessError> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return match parts.headers.contains_key(header::AUTHORIZATION) {
            true => Err(AccessError::BadHeader),
            false => Err(AccessError::Missing),
        };
    };
    let value = value.to_str().map_err(|_| AccessError::BadHeader)?;
    let (scheme, token) = value.split_once(' ').ok_or(AccessError::BadHeader)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, DPoP...) is not a bearer token: challenge for one.
        return Err(AccessError::Missing);
    }
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(AccessError::BadHeader);
    }
    Ok(token)
}
