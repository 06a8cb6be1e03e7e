//! The client side of the one grant ctr's tools use: client credentials (RFC 6749 section
//! 4.4), the client authenticated with HTTP Basic.

/// Why no token was had.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// No HTTP answer (the endpoint is unreachable).
    #[error("{0}")]
    Unreachable(String),
    /// The token endpoint answered without a token.
    #[error("the token endpoint refused {client_id}: {status} {error}")]
    Refused {
        client_id: String,
        status: u16,
        error: String,
    },
}

/// An access token for `client_id` from `token_endpoint`, for `scope` (space-separated) if
/// given, else whatever the issuer grants by default. With `dpop`, the request carries a
/// proof of that key and the issuer binds the token to it (RFC 9449 section 5).
pub async fn client_credentials(
    http: &reqwest::Client,
    token_endpoint: &str,
    client_id: &str,
    secret: &str,
    scope: Option<&str>,
    dpop: Option<&crate::dpop::ProofKey>,
) -> Result<String, GrantError> {
    let mut form = reqwest::Url::parse("https://form.invalid/")
        .map_err(|e| GrantError::Unreachable(e.to_string()))?;
    form.query_pairs_mut()
        .append_pair("grant_type", "client_credentials");
    if let Some(scope) = scope {
        form.query_pairs_mut().append_pair("scope", scope);
    }
    let mut request = http.post(token_endpoint);
    if let Some(key) = dpop {
        let proof = key
            .proof("POST", token_endpoint, None)
            .map_err(|e| GrantError::Unreachable(e.to_string()))?;
        request = request.header("DPoP", proof);
    }
    let response = request
        .basic_auth(client_id, Some(secret))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form.query().unwrap_or_default().to_owned())
        .send()
        .await
        .map_err(|e| GrantError::Unreachable(error_chain(&e)))?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| GrantError::Refused {
            client_id: client_id.to_owned(),
            status,
            error: body["error"].as_str().unwrap_or_default().to_owned(),
        })
}

/// An error with its causes, `a: b: c`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}
