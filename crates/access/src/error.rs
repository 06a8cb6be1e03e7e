//! Why an access token was refused: each reason has a problem type of its own and the
//! RFC 6750 error code a client acts on. No variant carries the token.

/// A request's access token that does not admit it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("the request carries no access token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the Authorization header is not one `Bearer <token>`")]
    BadHeader,
    #[error("the access token is not a JWT (three base64url parts, JSON header and claims)")]
    Malformed,
    #[error("the access token's algorithm `{0}` is not accepted (asymmetric algorithms only)")]
    Algorithm(String),
    #[error("the access token's header carries `{0}`: keys come from the issuer's JWKS only")]
    HeaderKey(&'static str),
    #[error("the access token's `typ` must be `at+jwt` (RFC 9068)")]
    Type,
    #[error("the access token names a key the issuer does not publish")]
    UnknownKey,
    #[error("the access token's signature does not verify with the issuer's key")]
    Signature,
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid yet (`nbf` or `iat` in the future)")]
    NotYetValid,
    #[error("the access token was issued by another issuer")]
    Issuer,
    #[error("the access token is not meant for this API (`aud`)")]
    Audience,
    #[error("the access token's claims are incomplete: {0}")]
    Claims(String),
    #[error("the access token lacks the scope `{0}`")]
    InsufficientScope(&'static str),
    #[error("the issuer's keys could not be fetched; retry shortly")]
    IssuerUnavailable,
}

impl AccessError {
    /// The problem type's slug.
    pub fn slug(&self) -> &'static str {
        match self {
            Self::Missing => "access-token-missing",
            Self::BadHeader => "authorization-header-invalid",
            Self::Malformed => "access-token-malformed",
            Self::Algorithm(_) => "access-token-algorithm",
            Self::HeaderKey(_) => "access-token-header",
            Self::Type => "access-token-type",
            Self::UnknownKey => "access-token-key-unknown",
            Self::Signature => "access-token-signature",
            Self::Expired => "access-token-expired",
            Self::NotYetValid => "access-token-not-yet-valid",
            Self::Issuer => "access-token-issuer",
            Self::Audience => "access-token-audience",
            Self::Claims(_) => "access-token-claims",
            Self::InsufficientScope(_) => "insufficient-scope",
            Self::IssuerUnavailable => "auth-issuer-unavailable",
        }
    }

    /// Every slug, for the OpenAPI documents.
    pub const UNAUTHORIZED: &[&str] = &[
        "access-token-missing",
        "access-token-malformed",
        "access-token-algorithm",
        "access-token-header",
        "access-token-type",
        "access-token-key-unknown",
        "access-token-signature",
        "access-token-expired",
        "access-token-not-yet-valid",
        "access-token-issuer",
        "access-token-audience",
        "access-token-claims",
    ];

    /// The HTTP status: 400 for a malformed header, 403 for a missing scope, 503 while the
    /// issuer's keys cannot be had, 401 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadHeader => 400,
            Self::InsufficientScope(_) => 403,
            Self::IssuerUnavailable => 503,
            _ => 401,
        }
    }

    /// The RFC 6750 `error` code of the `WWW-Authenticate` challenge; none when no token was
    /// sent (section 3.1) or the failure is the server's.
    pub fn rfc6750_code(&self) -> Option<&'static str> {
        match self {
            Self::Missing | Self::IssuerUnavailable => None,
            Self::BadHeader => Some("invalid_request"),
            Self::InsufficientScope(_) => Some("insufficient_scope"),
            _ => Some("invalid_token"),
        }
    }

    /// The `WWW-Authenticate` value answering this refusal (RFC 6750 section 3).
    pub fn challenge(&self, realm: &str) -> String {
        let mut challenge = format!("Bearer realm=\"{realm}\"");
        if let Some(code) = self.rfc6750_code() {
            challenge.push_str(&format!(", error=\"{code}\""));
            // The description is our own text (no quotes, never the token).
            challenge.push_str(&format!(", error_description=\"{self}\"").replace('`', "'"));
        }
        if let Self::InsufficientScope(scope) = self {
            challenge.push_str(&format!(", scope=\"{scope}\""));
        }
        challenge
    }
}
