//! Sender-constrained access (DPoP, RFC 9449): a request made with a DPoP-bound access token
//! carries a proof, a JWT the customer's client signs with its own key per request. The
//! server checks the proof ([`ProofVerifier`]), that the key's RFC 7638 thumbprint is the
//! access token's `cnf.jkt`, and that the proof's `jti` was not seen before (the caller's
//! replay store, keyed by [`Proof::replay_key`]). Clients make proofs with a [`ProofKey`].

mod error;
mod key;
mod verify;

pub use error::DpopError;
pub use key::{KeyError, ProofKey};
pub use reqwest::Url;
pub use verify::{
    MAX_PROOF_BYTES, Proof, ProofRequest, ProofVerifier, access_token_hash, thumbprint,
};
