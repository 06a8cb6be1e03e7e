//! A verifier-side cache of an issuer's JWKS: time-bounded, one refresh at a time, an
//! unknown `kid` triggers at most one rate-limited refetch, and a failed fetch keeps
//! serving the keys already cached.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::RwLock;

use crate::{Clock, JwkSet, KeyError, KeyResolver, KeySet, VerificationKey};

/// Where a cache gets an issuer's key set from (HTTPS in the services, a fake in tests).
#[async_trait]
pub trait JwksFetcher: Send + Sync {
    async fn fetch(&self) -> Result<JwkSet, String>;
}

#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    /// Keys older than this are refreshed before use (and still used if that fails).
    pub max_age: Duration,
    /// At most one fetch attempt per this interval, whatever triggers it.
    pub min_refetch_interval: Duration,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    fetched_at_ms: i64,
    last_attempt_ms: Option<i64>,
    last_error: Option<String>,
}

/// The cached key set of one issuer.
pub struct KeySetCache {
    fetcher: Box<dyn JwksFetcher>,
    policy: CachePolicy,
    clock: Arc<dyn Clock>,
    state: RwLock<State>,
    refresh: tokio::sync::Mutex<()>,
}

/// What a readiness probe or an operator wants to know about a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    pub keys: usize,
    pub loaded: bool,
    pub last_error: Option<String>,
}

impl KeySetCache {
    pub fn new(
        fetcher: impl JwksFetcher + 'static,
        policy: CachePolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            fetcher: Box::new(fetcher),
            policy,
            clock,
            state: RwLock::default(),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    pub fn status(&self) -> CacheStatus {
        let state = self.state.read();
        CacheStatus {
            keys: state.keys.as_ref().map_or(0, |k| k.len()),
            loaded: state.keys.is_some(),
            last_error: state.last_error.clone(),
        }
    }

    /// Fetches now unless a fetch was attempted within the minimum interval.
    pub async fn refresh(&self) {
        let _single_flight = self.refresh.lock().await;
        let now = self.clock.now_ms();
        let last_attempt = self.state.read().last_attempt_ms;
        if let Some(last) = last_attempt
            && now - last < millis(self.policy.min_refetch_interval)
        {
            return;
        }
        self.state.write().last_attempt_ms = Some(now);
        let outcome = self
            .fetcher
            .fetch()
            .await
            .and_then(|set| KeySet::from_jwks(&set).map_err(|e| e.to_string()));
        let mut state = self.state.write();
        match outcome {
            Ok(keys) => {
                state.keys = Some(Arc::new(keys));
                state.fetched_at_ms = now;
                state.last_error = None;
            }
            Err(error) => {
                tracing::warn!(%error, "JWKS fetch failed; serving the cached keys, if any");
                state.last_error = Some(error);
            }
        }
    }

    fn lookup(&self, kid: &str) -> (Option<Arc<VerificationKey>>, bool) {
        let state = self.state.read();
        let fresh = self.clock.now_ms() - state.fetched_at_ms < millis(self.policy.max_age);
        (
            state.keys.as_ref().and_then(|k| k.get(kid)),
            fresh && state.keys.is_some(),
        )
    }

    /// The key for `kid`, refreshing once if the set is stale or does not know `kid`.
    pub async fn key(&self, kid: &str) -> Result<Arc<VerificationKey>, KeyError> {
        if let (Some(key), true) = self.lookup(kid) {
            return Ok(key);
        }
        self.refresh().await;
        let state = self.state.read();
        match &state.keys {
            Some(keys) => keys.get(kid).ok_or(KeyError::UnknownKid),
            None => Err(KeyError::Unavailable(
                state
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "the key set was never fetched".into()),
            )),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A set of per-issuer caches is a key resolver.
#[async_trait]
impl KeyResolver for std::collections::HashMap<String, Arc<KeySetCache>> {
    async fn key(&self, iss: &str, kid: &str) -> Result<Arc<VerificationKey>, KeyError> {
        match self.get(iss) {
            Some(cache) => cache.key(kid).await,
            None => Err(KeyError::UnknownKid),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{FakeClock, Jwk};

    fn point(byte: u8) -> Vec<u8> {
        // A valid point: the P-384 generator's multiple from a fixed scalar.
        let scalar = [byte; 48];
        let secret = p384::SecretKey::from_slice(&scalar).expect("scalar");
        secret.public_key().to_sec1_bytes().to_vec()
    }

    struct Fake {
        calls: Arc<AtomicUsize>,
        sets: Arc<RwLock<Result<JwkSet, String>>>,
    }

    #[async_trait]
    impl JwksFetcher for Fake {
        async fn fetch(&self) -> Result<JwkSet, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            self.sets.read().clone()
        }
    }

    fn set(kids: &[(&str, u8)]) -> JwkSet {
        JwkSet {
            keys: kids
                .iter()
                .map(|(kid, b)| Jwk::p384(*kid, &point(*b)).unwrap())
                .collect(),
        }
    }

    type World = (
        Arc<KeySetCache>,
        Arc<AtomicUsize>,
        Arc<RwLock<Result<JwkSet, String>>>,
        Arc<FakeClock>,
    );

    fn cache(initial: JwkSet) -> World {
        let calls = Arc::new(AtomicUsize::new(0));
        let sets = Arc::new(RwLock::new(Ok(initial)));
        let clock = Arc::new(FakeClock::at_secs(1_000));
        let policy = CachePolicy {
            max_age: Duration::from_secs(60),
            min_refetch_interval: Duration::from_secs(5),
        };
        let fake = Fake {
            calls: calls.clone(),
            sets: sets.clone(),
        };
        (
            Arc::new(KeySetCache::new(fake, policy, clock.clone())),
            calls,
            sets,
            clock,
        )
    }

    #[tokio::test]
    async fn first_use_fetches_once_and_then_serves_from_cache() {
        let (cache, calls, _, _) = cache(set(&[("a", 1)]));
        cache.key("a").await.unwrap();
        cache.key("a").await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch() {
        let (cache, calls, _, _) = cache(set(&[("a", 1)]));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let c = cache.clone();
                tokio::spawn(async move { c.key("a").await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one refresh at a time, and the others reuse it"
        );
    }

    #[tokio::test]
    async fn unknown_kid_refetches_at_most_once_per_interval() {
        let (cache, calls, sets, clock) = cache(set(&[("a", 1)]));
        cache.key("a").await.unwrap();
        clock.advance(Duration::from_secs(6));
        assert_eq!(cache.key("b").await.unwrap_err(), KeyError::UnknownKid);
        assert_eq!(cache.key("b").await.unwrap_err(), KeyError::UnknownKid);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the second miss inside the interval does not fetch"
        );

        *sets.write() = Ok(set(&[("a", 1), ("b", 2)]));
        assert_eq!(
            cache.key("b").await.unwrap_err(),
            KeyError::UnknownKid,
            "still rate-limited"
        );
        clock.advance(Duration::from_secs(6));
        assert_eq!(
            cache.key("b").await.unwrap().kid,
            "b",
            "a rotated key is found after the interval"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn failed_fetch_keeps_serving_cached_keys() {
        let (cache, _, sets, clock) = cache(set(&[("a", 1)]));
        cache.key("a").await.unwrap();
        *sets.write() = Err("issuer down".into());
        clock.advance(Duration::from_secs(120));
        assert_eq!(
            cache.key("a").await.unwrap().kid,
            "a",
            "stale keys are served while the issuer is down"
        );
        assert_eq!(cache.status().last_error.as_deref(), Some("issuer down"));
    }

    #[tokio::test]
    async fn never_fetched_set_reports_unavailable() {
        let (cache, _, sets, _) = cache(set(&[]));
        *sets.write() = Err("connection refused".into());
        assert_eq!(
            cache.key("a").await.unwrap_err(),
            KeyError::Unavailable("connection refused".into())
        );
        assert!(!cache.status().loaded);
    }

    #[tokio::test]
    async fn a_set_with_an_invalid_key_is_refused_whole() {
        let mut bad = set(&[("a", 1)]);
        bad.keys[0].crv = "P-256".into();
        let (cache, _, _, _) = cache(bad);
        assert!(matches!(
            cache.key("a").await,
            Err(KeyError::Unavailable(_))
        ));
    }

    #[test]
    fn a_jwks_with_a_private_member_is_refused() {
        let json = r#"{"keys":[{"kty":"EC","crv":"P-384","x":"AA","y":"AA","kid":"k","use":"sig","alg":"ES384","d":"secret"}]}"#;
        assert!(serde_json::from_str::<JwkSet>(json).is_err());
    }
}
