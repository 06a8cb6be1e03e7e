//! Access tokens verified once: what verification found, remembered by the token's SHA-256
//! (never by the token itself), until the earlier of its `exp` and [`MAX_AGE_SECS`], and only
//! under the key set it was verified with: when the issuer's keys change (a key withdrawn, a
//! key added), every entry is stale and the next request verifies its token again.
//!
//! The cost is bounded: at most [`MAX_ENTRIES`] entries (quick_cache evicts the least useful
//! first), each the 32-byte digest and the [`Access`] (a few hundred bytes: customer, client,
//! `jti`, scopes, thumbprint), so a few MiB at most. Refusals are never remembered.

use quick_cache::sync::Cache;
use sha2::{Digest as _, Sha256};

use crate::Access;

/// The most entries kept.
pub const MAX_ENTRIES: usize = 10_000;
/// The longest an entry is trusted, in seconds, whatever the token's `exp`.
pub const MAX_AGE_SECS: i64 = 60;

/// The SHA-256 of a token: the key it is remembered by.
pub(crate) type Digest = [u8; 32];

pub(crate) fn digest(token: &str) -> Digest {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Clone)]
struct Entry {
    access: Access,
    /// Trusted while `now < until` (Unix seconds).
    until: i64,
    /// The issuer's key set it was verified under.
    keys: u64,
}

/// The cache of verified access tokens.
pub(crate) struct Verified {
    cache: Cache<Digest, Entry>,
}

impl Verified {
    pub(crate) fn new() -> Self {
        Self {
            cache: Cache::new(MAX_ENTRIES),
        }
    }

    /// What the token of `digest` was verified as, if that still holds at `now` under the
    /// key set `keys`.
    pub(crate) fn get(&self, digest: &Digest, now: i64, keys: u64) -> Option<Access> {
        let entry = self.cache.get(digest)?;
        if entry.keys == keys && now < entry.until {
            return Some(entry.access);
        }
        self.cache.remove(digest);
        None
    }

    /// Remembers a verification made at `now` under the key set `keys`.
    pub(crate) fn insert(&self, digest: Digest, access: &Access, now: i64, keys: u64) {
        let until = access.expires_at.min(now.saturating_add(MAX_AGE_SECS));
        if until > now {
            self.cache.insert(
                digest,
                Entry {
                    access: access.clone(),
                    until,
                    keys,
                },
            );
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(expires_at: i64) -> Access {
        Access {
            customer: "c_alice".into(),
            client_id: "c_alice".into(),
            jti: "j".into(),
            scopes: vec!["orders:write".into()],
            expires_at,
            jkt: None,
        }
    }

    #[test]
    fn an_entry_holds_until_the_earlier_of_exp_and_the_maximum_age() {
        let verified = Verified::new();
        let (short, long) = (digest("short"), digest("long"));
        verified.insert(short, &access(1_010), 1_000, 1);
        verified.insert(long, &access(9_999), 1_000, 1);
        assert!(verified.get(&short, 1_009, 1).is_some());
        assert!(verified.get(&short, 1_010, 1).is_none(), "expired at exp");
        assert!(verified.get(&long, 1_000 + MAX_AGE_SECS - 1, 1).is_some());
        assert!(
            verified.get(&long, 1_000 + MAX_AGE_SECS, 1).is_none(),
            "verified again after the maximum age"
        );
    }

    #[test]
    fn a_new_key_set_makes_every_entry_stale_and_an_expired_token_is_not_kept() {
        let verified = Verified::new();
        let token = digest("t");
        verified.insert(token, &access(2_000), 1_000, 1);
        assert!(verified.get(&token, 1_001, 2).is_none(), "keys changed");
        assert!(
            verified.get(&token, 1_001, 1).is_none(),
            "and the entry is gone"
        );
        verified.insert(token, &access(1_000), 1_000, 1);
        assert_eq!(verified.len(), 0, "a token expiring now is not remembered");
    }

    #[test]
    fn the_cache_is_bounded() {
        let verified = Verified::new();
        for i in 0..(MAX_ENTRIES * 2) {
            verified.insert(digest(&i.to_string()), &access(5_000), 1_000, 1);
        }
        assert!(verified.len() <= MAX_ENTRIES, "{}", verified.len());
    }
}
