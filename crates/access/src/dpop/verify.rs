//! Checking a DPoP proof (RFC 9449 section 4.3), in order: size and form, header (`typ`, an
//! accepted asymmetric `alg`, a public `jwk` that fits it, nothing that names a key elsewhere),
//! the signature (jsonwebtoken), then `htm`, `htu`, `iat` and `ath`. Replay is the caller's:
//! it owns the store that every replica shares.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use reqwest::Url;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::DpopError;

/// The largest proof read: an RSA-4096 key in the header stays well under it.
pub const MAX_PROOF_BYTES: usize = 4 * 1024;

/// The longest `jti` accepted (RFC 9449 asks for at least 96 random bits; a UUID is 36).
const MAX_JTI_CHARS: usize = 128;

/// Header parameters that name a key elsewhere or extensions the verifier would have to
/// understand: refused.
const FOREIGN_HEADERS: [&str; 6] = ["jku", "x5u", "x5c", "x5t", "x5t#S256", "crit"];

/// The most proof headers whose key is kept parsed (see [`HeaderKeys`]).
pub const MAX_PARSED_KEYS: usize = 10_000;

/// JWK members that only a private (or symmetric) key has.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// What a proof must match: the request as this server received it.
#[derive(Debug, Clone, Copy)]
pub struct ProofRequest<'a> {
    /// The HTTP method, as sent (`POST`).
    pub method: &'a str,
    /// The request's URL as this server sees it (`https://` + its `Host` + its path).
    pub url: &'a Url,
    /// The access token the request carries; the proof's `ath` must be its hash. `None` at a
    /// token endpoint, where no access token exists yet.
    pub access_token: Option<&'a str>,
}

/// A proof that verified: the key it proves and what the replay store keys it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The RFC 7638 thumbprint (SHA-256, base64url) of the proof's key.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
}

impl Proof {
    /// The replay store's key: SHA-256 (hex) of the key's thumbprint and the `jti`, so that
    /// one client's `jti` never collides with another's and the row has a fixed size.
    pub fn replay_key(&self) -> String {
        let digest = Sha256::digest(format!("{}\n{}", self.jkt, self.jti));
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Verifies DPoP proofs: the algorithms accepted, how old a proof may be and how far in the
/// future its clock may run, and (optionally) the origins a proof's `htu` may name.
#[derive(Debug, Clone)]
pub struct ProofVerifier {
    algorithms: Vec<Algorithm>,
    max_age: i64,
    skew: i64,
    origins: Vec<Url>,
    keys: HeaderKeys,
}

/// A proof header's verdict, kept: a client signs every proof under the same header (`typ`,
/// `alg`, its `jwk`), so its checks, the key's parsing and its thumbprint are done once per
/// header rather than once per request. Keyed by the SHA-256 of the header as sent; at most
/// [`MAX_PARSED_KEYS`] entries (about 0.5 KiB each: the digest, the parsed key, the
/// thumbprint), the least useful evicted first. A header that fails its checks is never kept.
#[derive(Clone)]
struct HeaderKeys(Arc<quick_cache::sync::Cache<[u8; 32], HeaderKey>>);

#[derive(Clone)]
struct HeaderKey {
    alg: Algorithm,
    key: Arc<DecodingKey>,
    jkt: Arc<str>,
}

impl std::fmt::Debug for HeaderKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderKeys")
            .field("len", &self.0.len())
            .finish()
    }
}

impl ProofVerifier {
    /// `algorithms` must be asymmetric (HMAC is dropped); `max_age` and `skew` in seconds;
    /// `origins` empty means the request's own `Host`.
    pub fn new(algorithms: Vec<Algorithm>, max_age: i64, skew: i64, origins: Vec<Url>) -> Self {
        Self {
            algorithms: algorithms
                .into_iter()
                .filter(|a| a.family() != AlgorithmFamily::Hmac)
                .collect(),
            max_age,
            skew,
            origins,
            keys: HeaderKeys(Arc::new(quick_cache::sync::Cache::new(MAX_PARSED_KEYS))),
        }
    }

    /// The accepted algorithms, space-separated, for the challenge's `algs` parameter.
    pub fn algs(&self) -> String {
        self.algorithms
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// How long after its `iat` a proof's `jti` must be remembered: past it, the proof is
    /// refused as too old anyway.
    pub fn remember_until(&self, proof: &Proof) -> i64 {
        proof.iat + self.max_age + self.skew
    }

    /// Verifies `proof` for `request` at `now` (seconds since the epoch).
    pub fn verify(
        &self,
        proof: &str,
        request: &ProofRequest<'_>,
        now: i64,
    ) -> Result<Proof, DpopError> {
        if proof.len() > MAX_PROOF_BYTES {
            return Err(DpopError::Malformed("larger than 4 KiB"));
        }
        let mut parts = proof.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(DpopError::Malformed("not three parts"));
        };
        let HeaderKey { alg, key, jkt } = self.header_key(header)?;
        let mut validation = Validation::new(alg);
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(proof, &key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => DpopError::Signature,
                jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
                | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_)
                | jsonwebtoken::errors::ErrorKind::InvalidEddsaKey
                | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat => {
                    DpopError::Key("not a valid key")
                }
                _ => DpopError::Malformed("the claims are not a JSON object"),
            })?
            .claims;
        let text = |name: &'static str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .ok_or(DpopError::Malformed(name))
        };
        let jti = text("jti")?;
        if jti.chars().count() > MAX_JTI_CHARS {
            return Err(DpopError::Malformed("jti longer than 128 characters"));
        }
        let htm = text("htm")?;
        let htu = text("htu")?;
        let iat = claims
            .get("iat")
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
            .ok_or(DpopError::Malformed("iat"))?;
        if htm != request.method {
            return Err(DpopError::Method);
        }
        if !self.url_matches(htu, request.url) {
            return Err(DpopError::Url);
        }
        if iat > now + self.skew {
            return Err(DpopError::FromFuture);
        }
        if iat < now - self.max_age - self.skew {
            return Err(DpopError::Expired);
        }
        if let Some(token) = request.access_token {
            let ath = claims.get("ath").and_then(Value::as_str);
            if ath != Some(access_token_hash(token).as_str()) {
                return Err(DpopError::AccessTokenHash);
            }
        }
        Ok(Proof {
            jkt: jkt.to_string(),
            jti: jti.to_owned(),
            iat,
        })
    }

    /// The header's checks and its key, from [`HeaderKeys`] when this header was seen before.
    fn header_key(&self, header: &str) -> Result<HeaderKey, DpopError> {
        let digest: [u8; 32] = Sha256::digest(header.as_bytes()).into();
        if let Some(known) = self.keys.0.get(&digest) {
            return Ok(known);
        }
        let header: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(DpopError::Malformed("the header is not base64url JSON"))?;
        if !header
            .get("typ")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"))
        {
            return Err(DpopError::Type);
        }
        let alg = self.algorithm(&header)?;
        if let Some(name) = FOREIGN_HEADERS.iter().find(|h| header.contains_key(**h)) {
            return Err(DpopError::Header(name));
        }
        let jwk = header.get("jwk").ok_or(DpopError::Header("no jwk"))?;
        let (key, jkt) = public_key(jwk, alg)?;
        let known = HeaderKey {
            alg,
            key: Arc::new(key),
            jkt: jkt.into(),
        };
        self.keys.0.insert(digest, known.clone());
        Ok(known)
    }

    fn algorithm(&self, header: &Map<String, Value>) -> Result<Algorithm, DpopError> {
        let name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(DpopError::Malformed("no alg"))?;
        name.parse::<Algorithm>()
            .ok()
            .filter(|alg| self.algorithms.contains(alg))
            .ok_or_else(|| DpopError::Algorithm(name.chars().take(16).collect()))
    }

    /// `htu` names this request: the same URL once both are normalised (RFC 3986 sections
    /// 6.2.2 and 6.2.3, as the URL parser does: case of scheme and host, default port, dot
    /// segments) and without query and fragment. With configured origins, its origin must be
    /// one of them and its path the request's.
    fn url_matches(&self, htu: &str, url: &Url) -> bool {
        let Some(htu) = bare(htu) else {
            return false;
        };
        let Some(url) = bare(url.as_str()) else {
            return false;
        };
        if self.origins.is_empty() {
            return htu == url;
        }
        htu.path() == url.path() && self.origins.iter().any(|o| o.origin() == htu.origin())
    }
}

/// A URL without query and fragment; `None` when it does not parse or is not absolute HTTP(S).
fn bare(url: &str) -> Option<Url> {
    let mut url = Url::parse(url).ok()?;
    if !matches!(url.scheme(), "https" | "http") || url.cannot_be_a_base() {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    Some(url)
}

/// `ath`: base64url(SHA-256(access token)) (RFC 9449 section 4.2).
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// The RFC 7638 thumbprint (SHA-256, base64url) of a public JWK.
pub fn thumbprint(jwk: &Jwk) -> Result<String, DpopError> {
    jwk.thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| DpopError::Key("no thumbprint for this key type"))
}

/// The proof's key as jsonwebtoken verifies with it, and its thumbprint; refuses private
/// material and a key that does not fit `alg` (curve, type, RSA size).
fn public_key(jwk: &Value, alg: Algorithm) -> Result<(DecodingKey, String), DpopError> {
    let members = jwk
        .as_object()
        .ok_or(DpopError::Key("`jwk` is not an object"))?;
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| members.contains_key(**m)) {
        return Err(DpopError::PrivateKey(member));
    }
    let jwk: Jwk = serde_json::from_value(jwk.clone()).map_err(|_| DpopError::Key("not a JWK"))?;
    let unfit = || DpopError::Key("the key's type or curve does not fit `alg`");
    let fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => {
            okp.curve == EllipticCurve::Ed25519
                && URL_SAFE_NO_PAD.decode(&okp.x).is_ok_and(|x| x.len() == 32)
        }
        (AlgorithmParameters::RSA(rsa), alg) if alg.family() == AlgorithmFamily::Rsa => {
            URL_SAFE_NO_PAD
                .decode(&rsa.n)
                .is_ok_and(|n| n.iter().skip_while(|b| **b == 0).count() * 8 >= 2048)
        }
        _ => false,
    };
    // The key is read with its coordinates at full length; the thumbprint is of the JWK as
    // it was sent, as its holder (and the issuer that bound a token to it) computed it.
    let full = fits
        .then(|| crate::jwk::with_full_coordinates(&jwk))
        .flatten()
        .ok_or_else(unfit)?;
    let key = DecodingKey::from_jwk(&full).map_err(|_| DpopError::Key("not a valid key"))?;
    Ok((key, thumbprint(&jwk)?))
}
