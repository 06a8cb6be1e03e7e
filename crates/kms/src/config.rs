use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use crate::{Kms, MockKms};

/// Which KMS backend to use. The mock is the default and what compose runs.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum KmsConfig {
    /// P-384 keys held in process: random, or derived from `seed` when one is set.
    Mock {
        #[serde(default)]
        seed: Option<Seed>,
    },
}

impl Default for KmsConfig {
    fn default() -> Self {
        Self::Mock { seed: None }
    }
}

impl KmsConfig {
    pub fn build(&self) -> Arc<dyn Kms> {
        match self {
            Self::Mock { seed: Some(seed) } => Arc::new(MockKms::from_seed(seed.expose())),
            Self::Mock { seed: None } => Arc::new(MockKms::random()),
        }
    }
}

/// Secret seed material for deterministic mock keys. Never printed.
#[derive(Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Seed(String);

impl Seed {
    pub fn new(seed: impl Into<String>) -> Self {
        Self(seed.into())
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed(<redacted>)")
    }
}
