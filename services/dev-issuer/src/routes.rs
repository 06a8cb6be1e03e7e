//! Discovery, keys and the token endpoint (client credentials, RFC 6749 section 4.4).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ctr_access::dpop::{DpopError, ProofRequest, Url};
use ctr_service_kit::scopes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Issuer;

pub fn router(issuer: Arc<Issuer>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/jwks.json", get(jwks))
        .route("/token", post(token))
        .with_state(issuer)
}

async fn metadata(State(issuer): State<Arc<Issuer>>) -> Json<Value> {
    let url = issuer.url();
    Json(json!({
        "issuer": url,
        "jwks_uri": format!("{url}/jwks.json"),
        "token_endpoint": format!("{url}/token"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": scopes::ALL,
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "dpop_signing_alg_values_supported": ctr_access::DEFAULT_DPOP_ALGORITHMS.split(',').collect::<Vec<_>>(),
        "service_documentation": "https://github.com/ctr/ctr#authentication (development issuer: not for production)",
    }))
}

async fn jwks(State(issuer): State<Arc<Issuer>>) -> Json<Value> {
    Json(issuer.signing_key().jwks())
}

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// An RFC 6749 section 5.2 error.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED
        && let Ok(value) = header::HeaderValue::from_str("Basic realm=\"dev-issuer\"")
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The client's credentials: HTTP Basic (RFC 6749 section 2.3.1) or the form's fields.
fn credentials(headers: &HeaderMap, form: &TokenRequest) -> Option<(String, String)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = String::from_utf8(STANDARD.decode(basic.trim()).ok()?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        return Some((id.to_owned(), secret.to_owned()));
    }
    Some((form.client_id.clone()?, form.client_secret.clone()?))
}

async fn token(
    State(issuer): State<Arc<Issuer>>,
    uri: Uri,
    headers: HeaderMap,
    Form(form): Form<TokenRequest>,
) -> Response {
    if form.grant_type.as_deref() != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported",
        );
    }
    let Some((client, secret)) = credentials(&headers, &form) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "authenticate with HTTP Basic or client_id and client_secret",
        );
    };
    let known = issuer.settings.knows(&client);
    if !known || secret != issuer.settings.dev_issuer_secret {
        tracing::info!(client_id = %client, "dev-issuer: client refused");
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        );
    }
    let requested: Vec<&str> = match &form.scope {
        Some(scope) => scope.split_whitespace().collect(),
        None => scopes::ALL.to_vec(),
    };
    let Some(granted) = requested
        .iter()
        .map(|s| scopes::ALL.iter().find(|known| *known == s).copied())
        .collect::<Option<Vec<&str>>>()
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "a requested scope is not one this issuer grants",
        );
    };
    let jkt = match issuer.proved_key(&uri, &headers) {
        Ok(jkt) => jkt,
        Err(error) => {
            tracing::info!(client_id = %client, problem = error.slug(), "dev-issuer: DPoP proof refused");
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_dpop_proof",
                &error.to_string(),
            );
        }
    };
    let ttl = issuer.settings.dev_issuer_token_ttl;
    let access_token = issuer.mint_bound(&client, &granted, ttl, jkt.as_deref());
    tracing::info!(client_id = %client, bound = jkt.is_some(), "dev-issuer: access token issued");
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": access_token,
            "token_type": if jkt.is_some() { "DPoP" } else { "Bearer" },
            "expires_in": ttl.as_secs(),
            "scope": granted.join(" "),
        })),
    )
        .into_response()
}

impl Issuer {
    /// The thumbprint of the key the client proved with a `DPoP` header (RFC 9449 section 5),
    /// or none when it sent no proof (a bearer token is issued).
    fn proved_key(&self, uri: &Uri, headers: &HeaderMap) -> Result<Option<String>, DpopError> {
        let mut proofs = headers.get_all("dpop").iter();
        let proof = match (proofs.next(), proofs.next()) {
            (None, _) => return Ok(None),
            (Some(_), Some(_)) => return Err(DpopError::Multiple),
            (Some(proof), None) => proof
                .to_str()
                .map_err(|_| DpopError::Malformed("not ASCII"))?,
        };
        // The token endpoint as this client addressed it (`Host`, or HTTP/2's `:authority`).
        let host = match headers.get(header::HOST) {
            Some(host) => host.to_str().map_err(|_| DpopError::Url)?,
            None => uri.authority().ok_or(DpopError::Url)?.as_str(),
        };
        let url = Url::parse(&format!("https://{host}/token")).map_err(|_| DpopError::Url)?;
        let request = ProofRequest {
            method: "POST",
            url: &url,
            access_token: None,
        };
        let now = crate::unix_now();
        let proof = self.proofs.verify(proof, &request, now)?;
        let mut seen = self.seen.lock();
        seen.retain(|_, until| *until >= now);
        if seen
            .insert(proof.replay_key(), self.proofs.remember_until(&proof))
            .is_some()
        {
            return Err(DpopError::Replayed);
        }
        Ok(Some(proof.jkt))
    }
}
