//! Customers, authenticated: every customer-facing route takes a [`Customer`], which extracts
//! only with a valid access token from the configured issuer (`CTR_AUTH_*`, verified by
//! ctr-access) and before the body is read, so a refused request does no work and counts
//! against no customer. A DPoP-bound token (`cnf.jkt`) must come with a proof of its key
//! (RFC 9449), each proof used once across every replica (the store remembers them).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, OriginalUri, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use ctr_access::dpop::{DpopError, ProofRequest, ProofVerifier};
use ctr_access::{Access, AccessError, AccessVerifier, KeysError};
use ctr_store::{PreludeOutcome, Store};
use reqwest::Url;

use crate::proofs::{ProofUse, SeenProofs, now_secs};

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

/// The access-token verifier a service's customer routes share (an axum `Extension`), with
/// the DPoP proof verifier and the replay cache proofs are recorded in.
#[derive(Clone)]
pub struct CustomerAuth {
    verifier: Arc<AccessVerifier>,
    proofs: Arc<ProofVerifier>,
    allow_bearer: bool,
    seen: Arc<OnceLock<SeenProofs>>,
}

impl std::fmt::Debug for CustomerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerAuth")
            .field("issuer", &self.verifier.issuer())
            .field("allow_bearer", &self.allow_bearer)
            .finish_non_exhaustive()
    }
}

impl CustomerAuth {
    /// The verifier for `CTR_AUTH_*`: its HTTPS client trusts `CTR_AUTH_CA_FILE` (or the web
    /// roots), TLS 1.3 only. The issuer's keys are fetched in the background until they load;
    /// until then the `customer-issuer` readiness check fails. DPoP proofs need the store:
    /// hand it over with [`Self::remember_proofs_in`] once it is open.
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
        let proofs = Arc::new(settings.proof_verifier().map_err(invalid)?);
        // The keys are fetched every second until they load, then again each time
        // `CTR_AUTH_KEYS_REFRESH` has passed since the last fetch: a key the issuer withdrew
        // stops being accepted within that time (verified tokens are remembered only under the
        // key set they were verified with).
        let loading = Arc::downgrade(&verifier);
        tokio::spawn(async move {
            while let Some(verifier) = loading.upgrade() {
                let loaded = verifier.keys().loaded();
                match verifier.refresh().await {
                    Ok(()) | Err(KeysError::RateLimited) => {}
                    Err(error) if !loaded => {
                        tracing::warn!(issuer = verifier.issuer(), %error, "customer issuer keys not loaded yet");
                    }
                    Err(error) => {
                        tracing::warn!(issuer = verifier.issuer(), %error, "customer issuer keys not refreshed; the keys held stay in use");
                    }
                }
                let wait = if verifier.keys().loaded() {
                    verifier.keys().next_refresh_in().max(KEYS_RETRY)
                } else {
                    KEYS_RETRY
                };
                drop(verifier);
                tokio::time::sleep(wait).await;
            }
        });
        let ready = Arc::downgrade(&verifier);
        health.register("customer-issuer", move || match ready.upgrade() {
            Some(v) if v.keys().loaded() => Ok(format!("keys of {} loaded", v.issuer())),
            Some(v) => Err(format!("the keys of {} are not loaded yet", v.issuer())),
            None => Err("stopped".into()),
        });
        Ok(Self {
            verifier,
            proofs,
            allow_bearer: settings.auth_allow_bearer,
            seen: Arc::new(OnceLock::new()),
        })
    }

    /// Records accepted DPoP proofs in `store` (shared by every replica) from now on.
    pub fn remember_proofs_in(&self, store: &Store) {
        self.seen.get_or_init(|| SeenProofs::new(store.clone()));
    }

    /// Whether access tokens that are not DPoP-bound are accepted (`CTR_AUTH_ALLOW_BEARER`).
    pub fn allows_bearer(&self) -> bool {
        self.allow_bearer
    }

    /// The layer that makes [`Customer`] extract on a router's routes.
    pub fn layer(&self) -> axum::Extension<Self> {
        axum::Extension(self.clone())
    }

    /// The `WWW-Authenticate` value for `refusal`: the scheme the request used (RFC 6750
    /// for `Bearer`, RFC 9449 section 7.1 for `DPoP`, with the accepted proof algorithms),
    /// and both schemes when no token was sent and bearer tokens are accepted.
    fn challenge(&self, refusal: &Refusal) -> String {
        let dpop = |code: Option<&str>, description: &str| {
            let mut c = format!("DPoP realm=\"{REALM}\"");
            if let Some(code) = code {
                c.push_str(&format!(
                    ", error=\"{code}\", error_description=\"{}\"",
                    description.replace(['`', '"'], "'")
                ));
            }
            c.push_str(&format!(", algs=\"{}\"", self.proofs.algs()));
            c
        };
        match refusal {
            Refusal::Access(error @ AccessError::Missing, _) if self.allow_bearer => {
                format!("{}, {}", error.challenge(REALM), dpop(None, ""))
            }
            Refusal::Access(AccessError::Missing, _) => dpop(None, ""),
            Refusal::Access(error, Scheme::Bearer) => error.challenge(REALM),
            Refusal::Access(error, Scheme::Dpop) => dpop(error.rfc6750_code(), &error.to_string()),
            Refusal::Dpop(error) => dpop(Some(error.code()), &error.to_string()),
        }
    }

    /// The problem answering `refusal`, with its challenge.
    fn refused(&self, refusal: Refusal) -> ApiError {
        let challenge = self.challenge(&refusal);
        let mut problem = match refusal {
            Refusal::Access(error, _) => {
                let status =
                    StatusCode::from_u16(error.status()).unwrap_or(StatusCode::UNAUTHORIZED);
                let title = match status {
                    StatusCode::FORBIDDEN => "Forbidden",
                    StatusCode::BAD_REQUEST => "Bad request",
                    StatusCode::SERVICE_UNAVAILABLE => "Issuer unavailable",
                    _ => "Unauthorized",
                };
                let problem = ApiError::new(status, error.slug(), title, error.to_string());
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    problem.retry_after(1)
                } else {
                    problem
                }
            }
            Refusal::Dpop(error) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                error.slug(),
                "Unauthorized",
                error.to_string(),
            ),
        };
        problem.challenge = Some(challenge.into());
        problem
    }

    /// Authenticates a request: its access token, and for a DPoP-bound one the proof, the
    /// binding and the proof's first use.
    async fn authenticate(&self, parts: &Parts) -> Result<Access, ApiError> {
        let (scheme, token) =
            authorization(parts).map_err(|e| self.refused(Refusal::Access(e, Scheme::Bearer)))?;
        let access = self.verifier.verify(token).await.map_err(|error| {
            tracing::info!(problem = error.slug(), "access token refused");
            self.refused(Refusal::Access(error, scheme))
        })?;
        let refuse = |error: DpopError| {
            tracing::info!(problem = error.slug(), client_id = %access.client_id, "DPoP refused");
            self.refused(Refusal::Dpop(error))
        };
        let jkt = match (scheme, access.jkt.as_deref()) {
            (Scheme::Bearer, Some(_)) => return Err(refuse(DpopError::BoundTokenAsBearer)),
            (Scheme::Bearer, None) if self.allow_bearer => return Ok(access),
            (Scheme::Bearer, None) => return Err(refuse(DpopError::BearerRefused)),
            (Scheme::Dpop, None) => return Err(refuse(DpopError::TokenUnbound)),
            (Scheme::Dpop, Some(jkt)) => jkt,
        };
        let mut headers = parts.headers.get_all(DPOP).iter();
        let proof = match (headers.next(), headers.next()) {
            (None, _) => return Err(refuse(DpopError::Missing)),
            (Some(_), Some(_)) => return Err(refuse(DpopError::Multiple)),
            (Some(proof), None) => proof
                .to_str()
                .map_err(|_| refuse(DpopError::Malformed("not ASCII")))?,
        };
        let url = request_url(parts).ok_or_else(|| refuse(DpopError::Url))?;
        let request = ProofRequest {
            method: parts.method.as_str(),
            url: &url,
            access_token: Some(token),
        };
        let proof = self
            .proofs
            .verify(proof, &request, now_secs())
            .map_err(refuse)?;
        if proof.jkt != jkt {
            return Err(refuse(DpopError::KeyMismatch));
        }
        let Some(seen) = self.seen.get() else {
            return Err(ApiError::internal(
                "DPoP proofs arrive before the replay cache's store is open",
            ));
        };
        let (key, until) = (proof.replay_key(), self.proofs.remember_until(&proof));
        if let Some(slot) = parts.extensions.get::<ProofSlot>()
            && ctr_store::Prelude::set(seen.record(&key, until))
        {
            // Recorded by the request's first transaction, or after the handler (see
            // `record_proofs`): a replay is refused either way, before any answer.
            *slot.0.lock() = Some((key, until));
            return Ok(access);
        }
        self.verdict(seen.first_use(&key, until).await?)?;
        Ok(access)
    }

    /// Accepts a proof used for the first time; refuses a replay or a proof expired on the
    /// database's clock.
    fn verdict(&self, used: ProofUse) -> Result<(), ApiError> {
        let error = match used {
            ProofUse::First => return Ok(()),
            ProofUse::Replayed => DpopError::Replayed,
            ProofUse::Expired => DpopError::Expired,
        };
        tracing::info!(problem = error.slug(), "DPoP refused");
        Err(self.refused(Refusal::Dpop(error)))
    }

    /// The layers that make [`Customer`] extract on `router`'s routes, and record each
    /// request's DPoP proof in the first transaction the request runs (the order, hold or
    /// checkout it writes): no transaction of its own. A request that wrote nothing (a read, a
    /// refusal) records its proof after its handler, before its answer; a replay is refused
    /// with 401 and its handler's writes (none: the transaction it rode with failed) undone.
    pub fn protect<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        router
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                record_proofs,
            ))
            .layer(self.layer())
    }
}

/// Where the extractor leaves a DPoP proof's replay key and the end of its window for
/// [`record_proofs`], when the request's transaction records it.
#[derive(Clone, Default)]
struct ProofSlot(Arc<parking_lot::Mutex<Option<(String, i64)>>>);

/// Runs a request in a [`ctr_store::Prelude`] scope, then makes sure its DPoP proof was
/// recorded exactly once: by the transaction it rode with, else now.
async fn record_proofs(
    State(auth): State<CustomerAuth>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let slot = ProofSlot::default();
    request.extensions_mut().insert(slot.clone());
    let prelude = ctr_store::Prelude::new();
    let response = prelude.scope(next.run(request)).await;
    let Some((key, until)) = slot.0.lock().take() else {
        return response;
    };
    let Some(seen) = auth.seen.get() else {
        return response;
    };
    let used = match prelude.outcome() {
        PreludeOutcome::Committed | PreludeOutcome::None => return response,
        PreludeOutcome::NotRun(_) => seen.first_use(&key, until).await,
        PreludeOutcome::Refused => seen.refusal(until).await,
    };
    match used
        .map_err(ApiError::from)
        .and_then(|used| auth.verdict(used))
    {
        Ok(_) => response,
        Err(problem) => problem.into_response(),
    }
}

/// Why a request was not authenticated.
enum Refusal {
    /// The access token (or its header), under the scheme the request used.
    Access(AccessError, Scheme),
    /// The DPoP proof or the token's binding.
    Dpop(DpopError),
}

/// The authorization scheme of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bearer,
    Dpop,
}

/// The header a DPoP proof travels in.
const DPOP: &str = "dpop";

/// The URL a client addressed: `https://` + the `Host` (or HTTP/2 `:authority`) + the path as
/// received (before any router nesting).
fn request_url(parts: &Parts) -> Option<Url> {
    let host = match parts.headers.get(header::HOST) {
        Some(host) => host.to_str().ok()?,
        None => parts.uri.authority()?.as_str(),
    };
    let path = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(parts.uri.path(), |original| original.0.path());
    Url::parse(&format!("https://{host}{path}")).ok()
}

/// The HTTPS client for the issuer's metadata and keys.
fn issuer_client(
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<reqwest::Client, StartError> {
    ctr_pki::reqwest_builder_for(ca_file)
        .map_err(|e| {
            StartError::Config(ConfigError::Setting {
                setting: "CTR_AUTH_CA_FILE",
                reason: e.to_string(),
            })
        })?
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
    auth: CustomerAuth,
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

    /// `cnf.jkt` when the token is bound to a key: the request proved it holds that key
    /// (a DPoP proof that verified, matched and was used once).
    pub fn key_thumbprint(&self) -> Option<&str> {
        self.access.jkt.as_deref()
    }

    /// The customer, when the token grants `scope`; 403 `insufficient-scope` otherwise.
    pub fn scoped(self, scope: &'static str) -> Result<Self, ApiError> {
        let scheme = match self.access.jkt {
            Some(_) => Scheme::Dpop,
            None => Scheme::Bearer,
        };
        self.access
            .require(scope)
            .map_err(|e| self.auth.refused(Refusal::Access(e, scheme)))?;
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

impl<S: Send + Sync> FromRequestParts<S> for Customer {
    type Rejection = ApiError;

    #[tracing::instrument(name = "authenticate", skip_all)]
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(auth) = parts.extensions.get::<CustomerAuth>().cloned() else {
            return Err(ApiError::internal(
                "a customer route without CustomerAuth's layer",
            ));
        };
        let access = auth.authenticate(parts).await?;
        let id = CustomerId::parse(&access.customer).map_err(|_| {
            auth.refused(Refusal::Access(AccessError::Claims(
                "the customer claim is not a customer id this API accepts (1 to 64 letters, digits, '_' or '-')".into(),
            ), Scheme::Bearer))
        })?;
        tracing::debug!(customer_id = %id, client_id = %access.client_id, jti = %access.jti, bound = access.jkt.is_some(), "customer authenticated");
        Ok(Self { id, access, auth })
    }
}

/// The scheme and token of the one `Authorization: Bearer <token>` (RFC 6750 section 2.1) or
/// `Authorization: DPoP <token>` (RFC 9449 section 7.1) header.
fn authorization(parts: &Parts) -> Result<(Scheme, &str), AccessError> {
    let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return match parts.headers.contains_key(header::AUTHORIZATION) {
            true => Err(AccessError::BadHeader),
            false => Err(AccessError::Missing),
        };
    };
    let value = value.to_str().map_err(|_| AccessError::BadHeader)?;
    let (scheme, token) = value.split_once(' ').ok_or(AccessError::BadHeader)?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        // Another scheme (Basic...) carries no access token: challenge for one.
        return Err(AccessError::Missing);
    };
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(AccessError::BadHeader);
    }
    Ok((scheme, token))
}
