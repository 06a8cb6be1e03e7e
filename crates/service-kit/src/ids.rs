//! Identifiers as the API accepts them: parsed once, at the edge.

use std::fmt;

use crate::ApiError;
use serde::{Deserialize, Serialize};

fn plain(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `op_` followed by a UUID: the order session a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct OrderProcessingId(String);

impl OrderProcessingId {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s.strip_prefix("op_").map(uuid::Uuid::try_parse) {
            Some(Ok(_)) => Ok(Self(s.to_owned())),
            _ => Err(ApiError::invalid(
                "invalid-order-processing-id",
                "`order_processing_id` must be `op_` followed by a UUID",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A customer id: 1 to 64 of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(String);

impl CustomerId {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        if plain(s, 64) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ApiError::invalid(
                "invalid-customer-id",
                "`customer_id` must be 1 to 64 letters, digits, `_` or `-`",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for OrderProcessingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a free-form reference (coupon code, payment method id) is plain and short.
pub fn reference(field: &'static str, s: &str) -> Result<String, ApiError> {
    if plain(s, 64) {
        Ok(s.to_owned())
    } else {
        Err(ApiError::invalid(
            "invalid-request",
            format!("`{field}` must be 1 to 64 letters, digits, `_` or `-`"),
        ))
    }
}

/// Seconds since the epoch as RFC 3339.
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

impl OrderProcessingId {
    /// A fresh id: `op_` and a UUIDv7.
    pub fn generate() -> Self {
        Self(format!("op_{}", uuid::Uuid::now_v7()))
    }
}

/// The OpenAPI schemas of the identifiers: what `parse` accepts.
mod schema {
    use std::borrow::Cow;

    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

    use super::{CustomerId, OrderProcessingId};

    fn string(pattern: &str, description: &str, example: &str) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .description(Some(description))
            .examples([example])
            .into()
    }

    impl utoipa::PartialSchema for CustomerId {
        fn schema() -> RefOr<Schema> {
            string(
                "^[A-Za-z0-9_-]{1,64}$",
                "A customer id: 1 to 64 letters, digits, `_` or `-`",
                "c_alice",
            )
        }
    }

    impl utoipa::ToSchema for CustomerId {
        fn name() -> Cow<'static, str> {
            "CustomerId".into()
        }
    }

    impl utoipa::PartialSchema for OrderProcessingId {
        fn schema() -> RefOr<Schema> {
            string(
                "^op_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
                "The relay's order: `op_` followed by a UUID",
                "op_01936f3e-8c2a-7b6e-9d4f-2a1b3c4d5e6f",
            )
        }
    }

    impl utoipa::ToSchema for OrderProcessingId {
        fn name() -> Cow<'static, str> {
            "OrderProcessingId".into()
        }
    }
}
