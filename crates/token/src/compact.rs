//! Strict parsing of the JWS compact form: size cap, three base64url segments without
//! padding, a header with only `alg`, `typ` and `kid`, and typed claims.

use std::collections::HashSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{Deserializer, MapAccess, Visitor};

use crate::{Claims, VerifyError};

/// The largest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The only accepted `alg`.
pub const ALGORITHM: &str = "ES384";
/// The only accepted `typ`.
pub const TOKEN_TYPE: &str = "cap+jwt";
/// An ES384 JWS signature: `r || s`, 48 bytes each.
pub const SIGNATURE_BYTES: usize = 96;

/// A token whose form has been checked but whose signature has not. Nothing in it may be
/// trusted; it becomes a [`crate::VerifiedToken`] only through [`crate::Verifier::verify`].
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    pub(crate) signing_input: &'a str,
    pub(crate) signature_b64: &'a str,
    pub(crate) signature_len: usize,
    /// The signature is `(r, s)` with `s` in the upper half of the group order: the twin of
    /// the canonical `(r, n - s)`, which alone is accepted.
    pub(crate) high_s: bool,
    pub(crate) kid: String,
    pub(crate) claims: Claims,
}

impl<'a> UnverifiedToken<'a> {
    /// Parses and checks the form of `token`, in the verifier's order: size and compact form,
    /// then the header allowlist, `alg` and `typ`, then the claims.
    pub fn parse(token: &'a str) -> Result<Self, VerifyError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(VerifyError::TooLarge {
                limit: MAX_TOKEN_BYTES,
            });
        }
        let mut segments = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(VerifyError::Malformed(
                "a token has exactly three `.`-separated segments",
            ));
        };
        let header = decode_segment(header_b64, "header")?;
        let payload = decode_segment(payload_b64, "payload")?;
        let signature = decode_segment(signature_b64, "signature")?;

        let kid = check_header(&header)?;
        let claims: Claims =
            ctr_json::decode(&payload).map_err(|e| VerifyError::InvalidClaims(e.to_string()))?;
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        Ok(Self {
            signing_input,
            signature_b64,
            signature_len: signature.len(),
            high_s: p384::ecdsa::Signature::from_slice(&signature)
                .is_ok_and(|parsed| parsed.normalize_s().is_some()),
            kid,
            claims,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The `jti` the token claims: a key to look something up by, never a proof of anything.
    pub fn jti(&self) -> uuid::Uuid {
        self.claims.jti
    }
}

fn decode_segment(segment: &str, name: &'static str) -> Result<Vec<u8>, VerifyError> {
    if segment.is_empty() {
        return Err(VerifyError::MalformedSegment {
            segment: name,
            reason: "empty".into(),
        });
    }
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|e| VerifyError::MalformedSegment {
            segment: name,
            reason: e.to_string(),
        })
}

/// Checks the header and answers its `kid`.
fn check_header(header: &[u8]) -> Result<String, VerifyError> {
    let members: Members = ctr_json::decode(header).map_err(|e| VerifyError::MalformedSegment {
        segment: "header",
        reason: e.to_string(),
    })?;
    let mut seen = HashSet::new();
    let (mut alg, mut typ, mut kid) = (None, None, None);
    for (name, value) in members.0 {
        if !seen.insert(name.clone()) {
            return Err(VerifyError::MalformedSegment {
                segment: "header",
                reason: "a member appears twice".into(),
            });
        }
        match name.as_str() {
            "alg" => alg = Some(value),
            "typ" => typ = Some(value),
            "kid" => kid = Some(value),
            _ => return Err(VerifyError::HeaderParameterRejected(name)),
        }
    }
    match alg.as_ref().and_then(|v| v.as_str()) {
        Some(ALGORITHM) => {}
        Some(other) => {
            return Err(VerifyError::AlgorithmRejected(
                other.chars().take(32).collect(),
            ));
        }
        None => return Err(VerifyError::AlgorithmRejected("<missing>".into())),
    }
    if typ.as_ref().and_then(|v| v.as_str()) != Some(TOKEN_TYPE) {
        return Err(VerifyError::TypeRejected);
    }
    match kid.as_ref().and_then(|v| v.as_str()) {
        Some(kid) if !kid.is_empty() && kid.len() <= 128 => Ok(kid.to_owned()),
        _ => Err(VerifyError::MalformedSegment {
            segment: "header",
            reason: "`kid` must be a non-empty string of at most 128 characters".into(),
        }),
    }
}

/// A JSON object's members in document order, duplicates kept, so they can be refused.
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}
