use ctr_money::Money;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The claims of a capability token. Deserialising rejects duplicated and unknown members,
/// non-integer times and wrongly typed values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub iss: String,
    /// Optional here so that a missing `aud` fails the audience step, not parsing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
    pub order_processing_id: String,
    pub capabilities: Vec<String>,
    /// What this token pays toward the order: one of the two business values the relay reads.
    pub settles: Money,
    /// Coupons: the order total the discount was priced on, which must be the order's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priced_on: Option<Money>,
    pub constraints: Constraints,
    /// When the customer's access token was DPoP-bound: the key the checkout must prove (RFC
    /// 7800's confirmation claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// `cnf`: the one confirmation method a capability token carries, the RFC 7638 thumbprint
/// of the customer's DPoP key (RFC 9449 section 6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    pub jkt: String,
}

impl Claims {
    /// The thumbprint of the key this token is bound to, if it is.
    pub fn bound_key(&self) -> Option<&str> {
        self.cnf.as_ref().map(|c| c.jkt.as_str())
    }
}

/// The signed business values of a token: what it settles toward the order and, for a
/// discount, the total it was priced on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Settlement {
    pub settles: Money,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priced_on: Option<Money>,
}

impl Settlement {
    /// A token that pays `settles` and was priced on nothing (points, payments).
    pub fn pays(settles: Money) -> Self {
        Self {
            settles,
            priced_on: None,
        }
    }
}

impl Claims {
    pub fn settlement(&self) -> Settlement {
        Settlement {
            settles: self.settles,
            priced_on: self.priced_on,
        }
    }
}

/// `aud` as JWT allows it: one string or an array. Only a single string is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The issuing domain's private object. The relay carries it without reading it; the
/// issuing domain parses it into its own type with [`Constraints::parse`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Constraints(Box<RawValue>);

impl Constraints {
    pub fn from_value<T: Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self(serde_json::value::to_raw_value(value)?))
    }

    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

impl PartialEq for Constraints {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}
