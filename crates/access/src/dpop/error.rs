//! Why a DPoP proof (or the binding it proves) was refused: each reason has a problem type of
//! its own and the RFC 9449 error code a client acts on. No variant carries the proof.

/// A request whose DPoP proof, or whose key binding, does not admit it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error(
        "the access token is DPoP-bound: send it as `Authorization: DPoP <token>` with a `DPoP` proof"
    )]
    BoundTokenAsBearer,
    #[error("the request carries a DPoP-bound access token but no `DPoP` proof header")]
    Missing,
    #[error("the request carries more than one `DPoP` header; send exactly one proof")]
    Multiple,
    #[error(
        "the `DPoP` scheme needs a DPoP-bound access token (one with `cnf.jkt`); send this token as `Bearer`"
    )]
    TokenUnbound,
    #[error(
        "this API accepts DPoP-bound access tokens only; obtain one by presenting a DPoP proof at the token endpoint"
    )]
    BearerRefused,
    #[error("the DPoP proof is not a JWS in compact form with JSON header and claims ({0})")]
    Malformed(&'static str),
    #[error("the DPoP proof's `typ` must be `dpop+jwt`")]
    Type,
    #[error("the DPoP proof's algorithm `{0}` is not accepted (asymmetric algorithms only)")]
    Algorithm(String),
    #[error("the DPoP proof's header carries `{0}`: the key comes from its `jwk` only")]
    Header(&'static str),
    #[error("the DPoP proof's `jwk` carries private key material (`{0}`)")]
    PrivateKey(&'static str),
    #[error("the DPoP proof's `jwk` is not a public key for its algorithm ({0})")]
    Key(&'static str),
    #[error("the DPoP proof's signature does not verify with its `jwk`")]
    Signature,
    #[error("the DPoP proof's `htm` is not this request's method")]
    Method,
    #[error("the DPoP proof's `htu` is not this request's URL")]
    Url,
    #[error("the DPoP proof is too old (`iat` outside the accepted window)")]
    Expired,
    #[error("the DPoP proof was issued in the future (`iat`)")]
    FromFuture,
    #[error("the DPoP proof's `ath` is not the hash of this request's access token")]
    AccessTokenHash,
    #[error("the DPoP proof's key is not the key the access token is bound to (`cnf.jkt`)")]
    KeyMismatch,
    #[error("the DPoP proof was already used (`jti` seen before)")]
    Replayed,
}

impl DpopError {
    /// The problem type's slug.
    pub fn slug(&self) -> &'static str {
        match self {
            Self::BoundTokenAsBearer => "dpop-bound-token-as-bearer",
            Self::Missing => "dpop-proof-missing",
            Self::Multiple => "dpop-proof-multiple",
            Self::TokenUnbound => "dpop-token-unbound",
            Self::BearerRefused => "bearer-token-refused",
            Self::Malformed(_) => "dpop-proof-malformed",
            Self::Type => "dpop-proof-type",
            Self::Algorithm(_) => "dpop-proof-algorithm",
            Self::Header(_) => "dpop-proof-header",
            Self::PrivateKey(_) => "dpop-proof-private-key",
            Self::Key(_) => "dpop-proof-key",
            Self::Signature => "dpop-proof-signature",
            Self::Method => "dpop-proof-method",
            Self::Url => "dpop-proof-url",
            Self::Expired => "dpop-proof-expired",
            Self::FromFuture => "dpop-proof-future",
            Self::AccessTokenHash => "dpop-proof-ath",
            Self::KeyMismatch => "dpop-key-mismatch",
            Self::Replayed => "dpop-proof-replayed",
        }
    }

    /// Every slug, for the OpenAPI documents.
    pub const SLUGS: &[&str] = &[
        "dpop-bound-token-as-bearer",
        "dpop-proof-missing",
        "dpop-proof-multiple",
        "dpop-token-unbound",
        "bearer-token-refused",
        "dpop-proof-malformed",
        "dpop-proof-type",
        "dpop-proof-algorithm",
        "dpop-proof-header",
        "dpop-proof-private-key",
        "dpop-proof-key",
        "dpop-proof-signature",
        "dpop-proof-method",
        "dpop-proof-url",
        "dpop-proof-expired",
        "dpop-proof-future",
        "dpop-proof-ath",
        "dpop-key-mismatch",
        "dpop-proof-replayed",
    ];

    /// The error code of the `WWW-Authenticate: DPoP` challenge (RFC 9449 sections 7.1 and
    /// 12.2): the token's own failures are `invalid_token`, the proof's `invalid_dpop_proof`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BoundTokenAsBearer | Self::TokenUnbound | Self::BearerRefused => "invalid_token",
            _ => "invalid_dpop_proof",
        }
    }
}
