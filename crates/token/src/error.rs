/// Why a token was refused. Each variant has its own stable [`VerifyError::problem_type`].
///
/// The messages go into answers, so they repeat nothing the token says except the name of an
/// issuer the verifier knows; the fields (the offending `kid`, `alg`, times, `jti`) are for
/// logs, through `Debug`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the token is not in JWS compact form: {0}")]
    Malformed(&'static str),
    #[error("the token's {segment} segment is malformed: {reason}")]
    MalformedSegment {
        segment: &'static str,
        reason: String,
    },
    #[error("a header parameter other than `alg`, `typ` and `kid` is not allowed")]
    HeaderParameterRejected(String),
    #[error("the algorithm is not allowed; only ES384 is")]
    AlgorithmRejected(String),
    #[error("the header `typ` must be `cap+jwt`")]
    TypeRejected,
    #[error("the token's claims are malformed: {0}")]
    InvalidClaims(String),
    #[error("the issuer is not known")]
    UnknownIssuer(String),
    #[error("the key is not published by issuer `{iss}`")]
    UnknownKey { iss: String, kid: String },
    /// `reason` (a URL, an error chain) is for logs; the message names the issuer only.
    #[error("the keys of issuer `{iss}` are unavailable")]
    KeysUnavailable { iss: String, reason: String },
    #[error("the signature is invalid: {0}")]
    SignatureInvalid(&'static str),
    #[error("the audience must be the single value `{expected}`")]
    AudienceInvalid { expected: String },
    #[error("the token is not valid yet")]
    NotYetValid { nbf: i64 },
    #[error("the token was issued in the future")]
    IssuedInFuture { iat: i64 },
    #[error("the token has expired")]
    Expired { exp: i64 },
    #[error("the token's lifetime is invalid: {0}")]
    LifetimeInvalid(String),
    #[error("the token is bound to another order")]
    OrderMismatch,
    #[error("issuer `{iss}` may not grant the token's capability")]
    CapabilityRejected { iss: String, capability: String },
    #[error("the token was already used")]
    Replayed { iss: String, jti: String },
}

impl VerifyError {
    /// Every problem type answered with 422 (an unusable token): for API documents. The others
    /// are `token-too-large` (413), `token-replayed` (409) and `issuer-keys-unavailable` (503).
    pub const UNPROCESSABLE: &[&'static str] = &[
        "token-malformed",
        "token-header-rejected",
        "token-algorithm-rejected",
        "token-type-rejected",
        "token-claims-invalid",
        "token-issuer-unknown",
        "token-key-unknown",
        "token-signature-invalid",
        "token-audience-invalid",
        "token-not-yet-valid",
        "token-issued-in-future",
        "token-expired",
        "token-lifetime-invalid",
        "order-mismatch",
        "token-capability-rejected",
    ];

    /// The last segment of this failure's problem `type` URI.
    pub fn problem_type(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "token-too-large",
            Self::Malformed(_) | Self::MalformedSegment { .. } => "token-malformed",
            Self::HeaderParameterRejected(_) => "token-header-rejected",
            Self::AlgorithmRejected(_) => "token-algorithm-rejected",
            Self::TypeRejected => "token-type-rejected",
            Self::InvalidClaims(_) => "token-claims-invalid",
            Self::UnknownIssuer(_) => "token-issuer-unknown",
            Self::UnknownKey { .. } => "token-key-unknown",
            Self::KeysUnavailable { .. } => "issuer-keys-unavailable",
            Self::SignatureInvalid(_) => "token-signature-invalid",
            Self::AudienceInvalid { .. } => "token-audience-invalid",
            Self::NotYetValid { .. } => "token-not-yet-valid",
            Self::IssuedInFuture { .. } => "token-issued-in-future",
            Self::Expired { .. } => "token-expired",
            Self::LifetimeInvalid(_) => "token-lifetime-invalid",
            Self::OrderMismatch => "order-mismatch",
            Self::CapabilityRejected { .. } => "token-capability-rejected",
            Self::Replayed { .. } => "token-replayed",
        }
    }

    /// The HTTP status that answers this failure: 409 for a replay, 503 when an issuer's keys
    /// cannot be had, 413 for size, 422 for every other refused token.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::TooLarge { .. } => 413,
            Self::Replayed { .. } => 409,
            Self::KeysUnavailable { .. } => 503,
            _ => 422,
        }
    }

    /// Whether the failure lies with the caller's token (4xx) or with an issuer (503).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::KeysUnavailable { .. })
    }
}

/// Why a key lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no such key id")]
    UnknownKid,
    #[error("keys unavailable: {0}")]
    Unavailable(String),
}
