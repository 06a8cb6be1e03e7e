//! Who the customer is: OAuth 2.0 access tokens in the JWT profile of RFC 9068, from one
//! configured issuer found by OpenID Connect discovery (or RFC 8414 metadata), verified
//! against its published keys with jsonwebtoken, asymmetric algorithms only.
//!
//! The crate knows nothing of HTTP servers: the service kit turns an [`AccessError`] into a
//! problem with `WWW-Authenticate` and hands handlers the verified [`Access`].

pub mod dpop;
mod error;
mod grant;
mod jwk;
mod keys;
mod settings;
mod verified;
mod verify;

pub use error::AccessError;
pub use grant::{GrantError, client_credentials};
pub use keys::{IssuerKey, IssuerKeys, KeysError};
pub use settings::{AccessSettings, DEFAULT_ALGORITHMS, DEFAULT_DPOP_ALGORITHMS, SettingError};
pub use verified::{MAX_AGE_SECS as VERIFIED_MAX_AGE_SECS, MAX_ENTRIES as VERIFIED_MAX_ENTRIES};
pub use verify::{Access, AccessVerifier, MAX_TOKEN_BYTES};
