//! `whsec_` secrets, and signing and verifying with them through the specification's own
//! library (`standardwebhooks`).

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use standardwebhooks::{Webhook, WebhookError};

use crate::{Event, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

/// The most secrets an endpoint signs with at once: the current one and the next during a
/// rotation, with room for one more.
const MAX_SECRETS: usize = 3;

/// The secrets an endpoint's deliveries are signed with: one, or during a rotation the old
/// and the new (every delivery then carries both signatures). Never printed.
pub struct Secrets(Vec<(String, Webhook)>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

/// A new secret: `whsec_` and the base64 of 32 random bytes from the operating system.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// Why secrets could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error("the webhook secret file {path} could not be read: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("no webhook secret: the file holds none (one `whsec_...` per line)")]
    Empty,
    #[error("at most {MAX_SECRETS} webhook secrets at once (one per line)")]
    TooMany,
    #[error(
        "webhook secret on line {line} is not `whsec_` followed by the base64 of 24 to 64 random bytes"
    )]
    Malformed { line: usize },
}

impl Secrets {
    /// Secrets from a file's text: one `whsec_<base64>` per line; blank lines and lines
    /// starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Self, SecretsError> {
        let mut secrets = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = SecretsError::Malformed { line: i + 1 };
            let Some(encoded) = line.strip_prefix("whsec_") else {
                return Err(malformed);
            };
            let key = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| malformed.clone())?;
            if !(24..=64).contains(&key.len()) {
                return Err(malformed);
            }
            let webhook = Webhook::new(line).map_err(|_| malformed)?;
            secrets.push((line.to_owned(), webhook));
        }
        match secrets.len() {
            0 => Err(SecretsError::Empty),
            n if n > MAX_SECRETS => Err(SecretsError::TooMany),
            _ => Ok(Self(secrets)),
        }
    }

    /// Secrets from the file at `path` (see [`Self::parse`]).
    pub fn read(path: &Path) -> Result<Self, SecretsError> {
        let text = std::fs::read_to_string(path).map_err(|e| SecretsError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Checks a delivery as a receiver does: the three headers, the timestamp within five
    /// minutes of the receiver's clock, and a `v1` signature of `id.timestamp.body` by one of
    /// these secrets. Answers the event the body holds.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Event, VerifyError> {
        let mut last = VerifyError::Signature;
        for (_, webhook) in &self.0 {
            match webhook.verify(body, headers) {
                Ok(()) => {
                    return serde_json::from_slice(body)
                        .map_err(|e| VerifyError::Body(e.to_string()));
                }
                Err(WebhookError::InvalidSignature) => last = VerifyError::Signature,
                Err(WebhookError::TimestampTooOldError | WebhookError::FutureTimestampError) => {
                    return Err(VerifyError::Timestamp);
                }
                Err(error) => return Err(VerifyError::Headers(error.to_string())),
            }
        }
        Err(last)
    }
}

/// Why a receiver refused a delivery.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("the webhook headers are missing or malformed: {0}")]
    Headers(String),
    #[error("webhook-timestamp is more than five minutes from this receiver's clock")]
    Timestamp,
    #[error("no webhook-signature matches the body under this receiver's secrets")]
    Signature,
    #[error("the signed body is not an order event: {0}")]
    Body(String),
}

/// The three headers of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub id: String,
    pub timestamp: i64,
    /// `v1,<base64>` per secret, separated by spaces.
    pub signature: String,
}

impl Signed {
    /// Signs `body` for the attempt at `timestamp` (Unix seconds) of the event `id`.
    pub fn new(
        id: &str,
        timestamp: i64,
        body: &str,
        secrets: &Secrets,
    ) -> Result<Self, VerifyError> {
        let signatures = secrets
            .0
            .iter()
            .map(|(_, webhook)| webhook.sign(id, timestamp, body.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| VerifyError::Headers(e.to_string()))?;
        Ok(Self {
            id: id.to_owned(),
            timestamp,
            signature: signatures.join(" "),
        })
    }

    /// As request headers.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (WEBHOOK_ID, self.id.clone()),
            (WEBHOOK_TIMESTAMP, self.timestamp.to_string()),
            (WEBHOOK_SIGNATURE, self.signature.clone()),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const B: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    #[test]
    fn the_specifications_example_signature_is_reproduced() {
        // Standard Webhooks' own test vector.
        let secrets = Secrets::parse(B).unwrap();
        let signed = Signed::new(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
            &secrets,
        )
        .unwrap();
        assert_eq!(
            signed.signature,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn during_a_rotation_every_delivery_carries_both_signatures() {
        let both = Secrets::parse(&format!("{A}\n# the next one\n{B}\n")).unwrap();
        let signed = Signed::new("evt_1", 1_700_000_000, "{}", &both).unwrap();
        let parts: Vec<&str> = signed.signature.split(' ').collect();
        assert_eq!(parts.len(), 2);
        for (secret, part) in [A, B].into_iter().zip(parts) {
            let one = Signed::new(
                "evt_1",
                1_700_000_000,
                "{}",
                &Secrets::parse(secret).unwrap(),
            )
            .unwrap();
            assert_eq!(one.signature, part);
        }
    }

    #[test]
    fn malformed_secret_files_are_refused_naming_the_line() {
        for (text, why) in [
            ("", "no secret"),
            ("# only a comment\n", "no secret"),
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "no whsec_ prefix"),
            ("whsec_not base64!", "not base64"),
            ("whsec_c2hvcnQ=", "a 5-byte key is too weak"),
            (&format!("{A}\n{A}\n{A}\n{A}"), "four secrets"),
        ] {
            assert!(Secrets::parse(text).is_err(), "{why}");
        }
        assert_eq!(
            Secrets::parse(&format!("{A}\nwhsec_x")).unwrap_err(),
            SecretsError::Malformed { line: 2 }
        );
    }

    #[test]
    fn a_new_secret_is_one_and_another_each_time() {
        let (one, other) = (new_secret(), new_secret());
        assert_ne!(one, other);
        assert!(Secrets::parse(&one).is_ok(), "{one}");
    }

    #[test]
    fn secrets_never_print() {
        let secrets = Secrets::parse(A).unwrap();
        assert!(!format!("{secrets:?}").contains("MfKQ"));
    }
}
