//! Safe retries: the `Idempotency-Key` request header (draft-ietf-httpapi-idempotency-key-header-09)
//! on every POST that creates something.
//!
//! A key belongs to the authenticated customer and to the route: another customer's identical
//! key is another key. The request it first came with is remembered by its fingerprint, a
//! SHA-256 of method, path and body. The service writes the key and its answer in the same
//! transaction as the effect ([`IdempotencyKeys::record`], which must change one row): no
//! crash can keep one without the other. A retry then finds the key taken instead of making a
//! second order, hold or checkout, and answers from the row:
//!
//! - same fingerprint, answer stored: that answer again (status, body, `Location`), marked
//!   `Idempotent-Replayed: true`;
//! - same fingerprint, answer not stored yet (the first request still runs): 409
//!   `idempotency-request-outstanding`;
//! - another fingerprint: 422 `idempotency-key-reused`.
//!
//! A request refused before it changed anything stores nothing: its retry is judged afresh.
//! Rows live `CTR_IDEMPOTENCY_TTL` on the database's clock (an answer carrying a capability no
//! longer than its hold) and are pruned in bounded batches.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ctr_store::{Query, Store, StoreError, query, query_as};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::{ApiError, CustomerId, ServerConfig};

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// The header a replayed answer carries.
pub const REPLAYED: &str = "idempotent-replayed";
/// The longest key accepted, in characters.
pub const MAX_LEN: usize = 255;

/// The kit's table of keys, applied with every service's own.
pub const MIGRATIONS: &[ctr_store::Migration] = &[ctr_store::Migration {
    version: 901,
    name: "idempotency keys",
    sql: include_str!("../migrations/0901_idempotency_keys.sql"),
}];

/// How many expired keys one prune deletes at most.
const PRUNE_BATCH: i64 = 500;
/// How often expired keys are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// A request's `Idempotency-Key`: a Structured Field string (RFC 9651) of 1 to 255
/// printable ASCII characters, such as `Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

/// What a key that is not a Structured Field string is told.
const NOT_A_STRING: &str =
    "is not a Structured Field string: send it in double quotes, as `Idempotency-Key: \"<key>\"`";

impl IdempotencyKey {
    /// Parses the header's value; the refusal names the header and what is wrong.
    pub fn parse(value: &[u8]) -> Result<Self, ApiError> {
        let item: sfv::Item = sfv::Parser::new(value)
            .parse()
            .map_err(|_| invalid_key(NOT_A_STRING))?;
        let sfv::BareItem::String(key) = item.bare_item else {
            return Err(invalid_key(NOT_A_STRING));
        };
        let key = key.as_str();
        if key.is_empty() || key.len() > MAX_LEN {
            return Err(invalid_key(&format!("must hold 1 to {MAX_LEN} characters")));
        }
        Ok(Self(key.to_owned()))
    }

    /// A fresh key (a UUIDv7), for a client's new request.
    pub fn fresh() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The header's value: the key as a Structured Field string.
    pub fn header_value(&self) -> HeaderValue {
        let escaped = self.0.replace('\\', "\\\\").replace('"', "\\\"");
        // Printable ASCII only (parse and fresh make no other), so always a valid value.
        HeaderValue::from_str(&format!("\"{escaped}\"")).unwrap_or(HeaderValue::from_static("\"\""))
    }
}

fn invalid_key(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "idempotency-key-invalid",
        "Idempotency-Key is invalid",
        format!("the `Idempotency-Key` header {what}"),
    )
    .with("header", "Idempotency-Key")
}

/// The request's key, if it sent one, with the request's fingerprint.
#[derive(Debug, Clone)]
pub struct Presented {
    key: IdempotencyKey,
    fingerprint: String,
}

/// The key of `headers`, if any (400 if it is not one).
fn presented_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid_key("appears more than once"));
    }
    IdempotencyKey::parse(value.as_bytes()).map(Some)
}

/// SHA-256 of method, path and body, hex.
fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut digest = Sha256::new();
    digest.update(method.as_bytes());
    digest.update(b"\n");
    digest.update(path.as_bytes());
    digest.update(b"\n");
    digest.update(body);
    format!("{:x}", digest.finalize())
}

/// A JSON request body ([`crate::ApiJson`]'s rules) with the request's `Idempotency-Key`
/// and fingerprint, for a handler that makes something.
pub struct Idempotent<T> {
    pub body: T,
    pub key: Option<Presented>,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Idempotent<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let key = presented_key(req.headers())?;
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let bytes: Bytes = crate::problem::json_body(req, state).await?;
        let key = key.map(|key| Presented {
            key,
            fingerprint: fingerprint(&method, &path, &bytes),
        });
        Ok(Self {
            body: ctr_json::decode(&bytes)?,
            key,
        })
    }
}

/// A key as the store keeps it: whose, for which route, and the request it came with.
#[derive(Debug, Clone)]
pub struct Scoped {
    customer: String,
    route: &'static str,
    key: String,
    fingerprint: String,
}

/// An answer as stored with its key and given again to a retry. Its `Debug` never shows the
/// body (a hold's carries its token).
#[derive(Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub location: Option<String>,
    /// JSON.
    pub body: String,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("location", &self.location)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl Answer {
    /// `body` as JSON, with `status` and, if given, `Location`.
    pub fn json(
        status: StatusCode,
        location: Option<String>,
        body: &impl serde::Serialize,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            status,
            location,
            body: serde_json::to_string(body).map_err(ApiError::internal)?,
        })
    }

    fn respond(self, replayed: bool) -> Response {
        let mut response = (self.status, self.body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(location) = self.location.and_then(|l| HeaderValue::try_from(l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        if replayed {
            headers.insert(REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }
}

impl IntoResponse for Answer {
    /// The first answer: as it is stored.
    fn into_response(self) -> Response {
        self.respond(false)
    }
}

/// What a taken key holds for a retry with the same request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// What the first request made (an order's id, a hold's jti).
    pub resource: String,
    /// How long ago it was taken, in seconds (the database's clock).
    pub age_secs: i64,
    /// The first answer, to give again; none while it is not known yet (or, for a checkout,
    /// never: its answer is its order's state).
    pub answer: Option<Answer>,
}

/// 409: the first request under this key has not been answered yet.
pub fn outstanding(retry_after: u64) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency-request-outstanding",
        "A request is outstanding for this Idempotency-Key",
        "the first request with this `Idempotency-Key` is still being processed; retry the same request later",
    )
    .retry_after(retry_after)
}

/// 422: the key was used for another request.
fn reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        "Idempotency-Key is already used",
        "this `Idempotency-Key` was used with another request (method, path or body); use a fresh key for a new request",
    )
}

/// The problems a route that takes a key may answer, by status (OpenAPI).
pub const PROBLEMS: [(u16, &str); 4] = [
    (400, "idempotency-key-invalid"),
    (400, "idempotency-key-missing"),
    (409, "idempotency-request-outstanding"),
    (422, "idempotency-key-reused"),
];

/// The keys in a service's store, and its policy (`CTR_IDEMPOTENCY_REQUIRED`,
/// `CTR_IDEMPOTENCY_TTL`).
#[derive(Clone)]
pub struct IdempotencyKeys {
    store: Store,
    required: bool,
    ttl_secs: i64,
    record: String,
    answer: String,
    forget: String,
    find: String,
    prune: String,
}

impl std::fmt::Debug for IdempotencyKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyKeys")
            .field("required", &self.required)
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

const WHERE_KEY: &str = "customer_id = $1 AND route = $2 AND idempotency_key = $3";

impl IdempotencyKeys {
    /// The keys in `store`, pruned in the background while the store is open.
    pub fn new(store: Store, config: &ServerConfig) -> Self {
        let keys = Self::unpruned(store, config);
        let pruning = keys.clone();
        crate::store::sweep_every(PRUNE_EVERY, "idempotency keys", move || {
            let pruning = pruning.clone();
            async move { pruning.prune().await }
        });
        keys
    }

    fn unpruned(store: Store, config: &ServerConfig) -> Self {
        let now = store.now_secs_sql();
        // A live row keeps its key; an expired one not pruned yet gives way.
        let until =
            format!("CASE WHEN $9 IS NOT NULL AND $9 < {now} + $10 THEN $9 ELSE {now} + $10 END");
        Self {
            required: config.idempotency_required,
            ttl_secs: i64::try_from(config.idempotency_ttl.as_secs()).unwrap_or(i64::MAX),
            record: format!(
                "INSERT INTO idempotency_keys (customer_id, route, idempotency_key, fingerprint, \
                 resource, status, location, body, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {now}, {until}) \
                 ON CONFLICT (customer_id, route, idempotency_key) DO UPDATE SET \
                 fingerprint = excluded.fingerprint, resource = excluded.resource, \
                 status = excluded.status, location = excluded.location, body = excluded.body, \
                 created_at = excluded.created_at, expires_at = excluded.expires_at \
                 WHERE idempotency_keys.expires_at <= {now} RETURNING 1"
            ),
            answer: format!(
                "UPDATE idempotency_keys SET status = $4, location = $5, body = $6 \
                 WHERE {WHERE_KEY} AND status IS NULL RETURNING 1"
            ),
            forget: format!("DELETE FROM idempotency_keys WHERE {WHERE_KEY}"),
            find: format!(
                "SELECT fingerprint, resource, status, location, body, {now} - created_at \
                 FROM idempotency_keys WHERE {WHERE_KEY} AND expires_at > {now}"
            ),
            prune: format!(
                "DELETE FROM idempotency_keys WHERE (customer_id, route, idempotency_key) IN \
                 (SELECT customer_id, route, idempotency_key FROM idempotency_keys \
                 WHERE expires_at <= {now} LIMIT {PRUNE_BATCH})"
            ),
            store,
        }
    }

    /// The key of a request by `customer` to `route` (a name such as `orders.create`), if it
    /// sent one; 400 `idempotency-key-missing` when keys are required and it sent none.
    pub fn scope(
        &self,
        customer: &CustomerId,
        route: &'static str,
        presented: Option<Presented>,
    ) -> Result<Option<Scoped>, ApiError> {
        match presented {
            Some(Presented { key, fingerprint }) => Ok(Some(Scoped {
                customer: customer.as_str().to_owned(),
                route,
                key: key.0,
                fingerprint,
            })),
            None if self.required => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "idempotency-key-missing",
                "Idempotency-Key is missing",
                "this service requires an `Idempotency-Key` header on this request (a fresh one per new request, the same one on its retries)",
            )
            .with("header", "Idempotency-Key")),
            None => Ok(None),
        }
    }

    fn keyed(&self, sql: &str, key: &Scoped) -> Query {
        query(sql.to_owned())
            .bind(key.customer.clone())
            .bind(key.route)
            .bind(key.key.clone())
    }

    /// The statement that takes `key` for the request that made `resource`, with its answer
    /// if it is known now, live for the TTL or until `until` (Unix seconds) if sooner. It
    /// changes one row, or none when the key is taken: run it first in the effect's
    /// transaction, guarded on one row ([`ctr_store::Conn::guarded`]), and stop when it
    /// changed none (nothing is written yet), to answer [`Self::recorded`].
    pub fn record(
        &self,
        key: &Scoped,
        resource: &str,
        answer: Option<&Answer>,
        until: Option<i64>,
    ) -> Query {
        self.keyed(&self.record, key)
            .bind(key.fingerprint.clone())
            .bind(resource.to_owned())
            .bind(answer.map(|a| i64::from(a.status.as_u16())))
            .bind(answer.and_then(|a| a.location.clone()))
            .bind(answer.map(|a| a.body.clone()))
            .bind(until)
            .bind(self.ttl_secs)
    }

    /// The statement that stores the answer of a key taken without one; changes one row.
    pub fn answer(&self, key: &Scoped, answer: &Answer) -> Query {
        self.keyed(&self.answer, key)
            .bind(i64::from(answer.status.as_u16()))
            .bind(answer.location.clone())
            .bind(answer.body.clone())
    }

    /// The statement that gives a key back (its effect was undone before anyone heard of it).
    pub fn forget(&self, key: &Scoped) -> Query {
        self.keyed(&self.forget, key)
    }

    /// What `key` holds for this request, if it is taken: 422 if it was taken by another
    /// request.
    pub async fn recorded(&self, key: &Scoped) -> Result<Option<Recorded>, ApiError> {
        type Row = (
            String,
            String,
            Option<i64>,
            Option<String>,
            Option<String>,
            i64,
        );
        let row: Option<Row> = self
            .store
            .fetch_optional(
                query_as(self.find.clone())
                    .bind(key.customer.clone())
                    .bind(key.route)
                    .bind(key.key.clone()),
            )
            .await?;
        let Some((fingerprint, resource, status, location, body, age_secs)) = row else {
            return Ok(None);
        };
        if fingerprint != key.fingerprint {
            return Err(reused());
        }
        let answer = match (status.and_then(|s| u16::try_from(s).ok()), body) {
            (Some(status), Some(body)) => Some(Answer {
                status: StatusCode::from_u16(status).map_err(ApiError::internal)?,
                location,
                body,
            }),
            _ => None,
        };
        Ok(Some(Recorded {
            resource,
            age_secs,
            answer,
        }))
    }

    /// The answer a retry under the taken `key` gets: the first one again, or 409 while it
    /// is not stored yet (or the transaction that took the key has not committed), or 422
    /// for another request.
    pub async fn replay(&self, key: &Scoped) -> Result<Response, ApiError> {
        match self.recorded(key).await?.and_then(|r| r.answer) {
            Some(answer) => Ok(replayed(answer)),
            None => Err(outstanding(1)),
        }
    }

    /// Deletes at most one batch of expired keys; answers how many.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        self.store.execute(query(self.prune.clone())).await
    }
}

/// `answer` given again to a retry, marked `Idempotent-Replayed: true`.
pub fn replayed(answer: Answer) -> Response {
    answer.respond(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_a_structured_field_string_of_1_to_255_printable_characters() {
        let ok = IdempotencyKey::parse(br#""8e03978e-40d5-43e8-bc93-6894a57f9324""#).unwrap();
        assert_eq!(ok.as_str(), "8e03978e-40d5-43e8-bc93-6894a57f9324");
        let escaped = IdempotencyKey::parse(br#""a \"quoted\" key""#).unwrap();
        assert_eq!(escaped.as_str(), r#"a "quoted" key"#);
        assert_eq!(
            IdempotencyKey::parse(escaped.header_value().as_bytes()).unwrap(),
            escaped,
            "the header value ctr sends parses back to the key"
        );
        let long = format!("\"{}\"", "k".repeat(MAX_LEN + 1));
        let cases: [(&[u8], &str); 7] = [
            (
                b"8e03978e-40d5",
                "a bare value is not a Structured Field string",
            ),
            (b"token", "a token is not a string"),
            (b"\"\"", "an empty key"),
            (long.as_bytes(), "256 characters"),
            (b"\"unterminated", "an unterminated string"),
            (
                "\"caf\u{e9}\"".as_bytes(),
                "a character outside printable ASCII",
            ),
            (b"42", "an integer"),
        ];
        for (value, why) in cases {
            let problem = IdempotencyKey::parse(value).unwrap_err();
            assert_eq!(problem.status, StatusCode::BAD_REQUEST, "{why}");
            assert_eq!(problem.slug, "idempotency-key-invalid", "{why}");
            assert!(
                problem.detail.contains("Idempotency-Key"),
                "{why}: {}",
                problem.detail
            );
        }
    }

    #[test]
    fn the_fingerprint_tells_method_path_and_body_apart() {
        let base = fingerprint("POST", "/service/v1/orders", b"{\"a\":1}");
        assert_eq!(
            base,
            fingerprint("POST", "/service/v1/orders", b"{\"a\":1}")
        );
        for other in [
            fingerprint("PUT", "/service/v1/orders", b"{\"a\":1}"),
            fingerprint("POST", "/service/v1/orders/x", b"{\"a\":1}"),
            fingerprint("POST", "/service/v1/orders", b"{\"a\":2}"),
        ] {
            assert_ne!(base, other);
        }
    }

    async fn keys(ttl: Duration) -> IdempotencyKeys {
        let store = Store::open("sqlite::memory:", MIGRATIONS).await.unwrap();
        let config = ServerConfig {
            idempotency_ttl: ttl,
            ..ServerConfig::defaults("test")
        };
        IdempotencyKeys::unpruned(store, &config)
    }

    fn scoped(customer: &str, key: &str, fingerprint: &str) -> Scoped {
        Scoped {
            customer: customer.into(),
            route: "orders.create",
            key: key.into(),
            fingerprint: fingerprint.into(),
        }
    }

    #[tokio::test]
    async fn a_taken_key_answers_its_first_answer_to_the_same_request_and_422_to_another() {
        let keys = keys(Duration::from_secs(3600)).await;
        let answer = Answer {
            status: StatusCode::CREATED,
            location: Some("/service/v1/orders/o1".into()),
            body: "{\"id\":\"o1\"}".into(),
        };
        let alice = scoped("c_alice", "k", "f1");
        assert_eq!(
            keys.store
                .execute(keys.record(&alice, "o1", Some(&answer), None))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            keys.store
                .execute(keys.record(&alice, "o2", Some(&answer), None))
                .await
                .unwrap(),
            0,
            "a live key is not taken twice"
        );
        let again = keys.recorded(&alice).await.unwrap().unwrap();
        assert_eq!(
            (again.resource.as_str(), again.answer),
            ("o1", Some(answer.clone()))
        );
        let other = scoped("c_alice", "k", "f2");
        assert_eq!(
            keys.recorded(&other).await.unwrap_err().slug,
            "idempotency-key-reused"
        );
        let bob = scoped("c_bob", "k", "f1");
        assert!(
            keys.recorded(&bob).await.unwrap().is_none(),
            "Bob's identical key is another key: nothing of Alice's"
        );
        assert_eq!(
            keys.store
                .execute(keys.record(&bob, "o3", None, None))
                .await
                .unwrap(),
            1
        );
        let pending = keys.recorded(&bob).await.unwrap().unwrap();
        assert_eq!((pending.resource.as_str(), pending.answer), ("o3", None));
        assert_eq!(
            keys.store
                .execute(keys.answer(&bob, &answer))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            keys.store
                .execute(keys.answer(&bob, &answer))
                .await
                .unwrap(),
            0,
            "answered once"
        );
    }

    #[tokio::test]
    async fn an_expired_key_is_pruned_and_may_be_taken_again() {
        let keys = keys(Duration::from_secs(3600)).await;
        let key = scoped("c_alice", "k", "f1");
        let (now,): (i64,) = keys
            .store
            .fetch_one(query_as(format!("SELECT {}", keys.store.now_secs_sql())))
            .await
            .unwrap();
        // Bounded by a hold that ended a second ago.
        assert_eq!(
            keys.store
                .execute(keys.record(&key, "h1", None, Some(now - 1)))
                .await
                .unwrap(),
            1
        );
        assert!(
            keys.recorded(&key).await.unwrap().is_none(),
            "an expired key holds nothing"
        );
        assert_eq!(
            keys.store
                .execute(keys.record(&key, "h2", None, Some(now + 60)))
                .await
                .unwrap(),
            1,
            "taken again"
        );
        assert_eq!(keys.recorded(&key).await.unwrap().unwrap().resource, "h2");
        let stale = scoped("c_bob", "k", "f1");
        assert_eq!(
            keys.store
                .execute(keys.record(&stale, "h3", None, Some(now - 5)))
                .await
                .unwrap(),
            1
        );
        assert_eq!(keys.prune().await.unwrap(), 1, "only the expired one");
    }
}
