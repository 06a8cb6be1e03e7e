use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::{Clock, VerifiedToken, VerifyError};

/// Remembers consumed `(iss, jti)` pairs until their token can no longer verify.
#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Consumes every token, or none: if any was seen before, nothing is recorded and the
    /// first replayed token is named.
    async fn consume_all(&self, tokens: &[&VerifiedToken]) -> Result<(), VerifyError>;

    /// How many pairs are remembered now.
    async fn len(&self) -> usize;

    async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

/// An in-memory replay store. Entries are dropped once `exp + leeway` has passed, so memory
/// is bounded by the tokens that could still verify.
#[derive(Debug)]
pub struct MemoryReplayStore {
    clock: Arc<dyn Clock>,
    leeway: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashMap<(String, Uuid), i64>,
    next_purge_secs: i64,
}

impl MemoryReplayStore {
    pub fn new(clock: Arc<dyn Clock>, leeway: Duration) -> Self {
        Self {
            clock,
            leeway,
            inner: Mutex::default(),
        }
    }
}

#[async_trait]
impl ReplayStore for MemoryReplayStore {
    async fn consume_all(&self, tokens: &[&VerifiedToken]) -> Result<(), VerifyError> {
        let now = self.clock.now_secs();
        let leeway = crate::secs(self.leeway);
        let mut inner = self.inner.lock();
        if now >= inner.next_purge_secs {
            inner.seen.retain(|_, forget_at| *forget_at > now);
            inner.next_purge_secs = now + 1;
        }
        let mut batch = std::collections::HashSet::new();
        for token in tokens {
            let c = token.claims();
            let key = (c.iss.clone(), c.jti);
            if inner.seen.contains_key(&key) || !batch.insert(key) {
                return Err(VerifyError::Replayed {
                    iss: c.iss.clone(),
                    jti: c.jti.to_string(),
                });
            }
        }
        for token in tokens {
            let c = token.claims();
            inner
                .seen
                .insert((c.iss.clone(), c.jti), c.exp.saturating_add(leeway));
        }
        Ok(())
    }

    async fn len(&self) -> usize {
        self.inner.lock().seen.len()
    }
}
