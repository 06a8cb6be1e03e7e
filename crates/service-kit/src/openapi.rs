//! The OpenAPI 3.1 document of a service's public API, generated from its request and
//! response types (`utoipa::ToSchema`), served at `/service/v1/openapi.json` with a docs page
//! at `/service/v1/docs` that renders it without loading anything from elsewhere.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use utoipa::ToSchema;
use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HttpMethod, InfoBuilder, OpenApi, OpenApiBuilder, PathItem,
    PathsBuilder, Ref, RefOr, Required, ResponseBuilder,
};

pub use utoipa::openapi::HttpMethod as Method;

pub const OPENAPI_PATH: &str = "/service/v1/openapi.json";
pub const DOCS_PATH: &str = "/service/v1/docs";

const PROBLEM_JSON: &str = "application/problem+json";

/// RFC 9457 problem details, as every error of every service is answered.
#[derive(ToSchema)]
#[schema(as = Problem)]
#[allow(dead_code, reason = "a schema: the answer is built by ApiError")]
struct ProblemSchema {
    /// `https://ctr.dev/problems/<slug>`: the stable, machine-readable kind of problem.
    r#type: String,
    title: String,
    status: u16,
    /// What was wrong, in words; never repeats a submitted value.
    detail: String,
    /// `urn:ctr:request:<request id>`.
    instance: Option<String>,
    /// The request id (also in the `x-request-id` header): quote it when reporting a problem.
    request_id: Option<String>,
}

/// One operation: what it takes, what it answers, which problems it may answer.
pub struct Endpoint {
    pub method: HttpMethod,
    pub path: String,
    pub operation_id: String,
    pub summary: &'static str,
    pub description: &'static str,
    pub params: Vec<Param>,
    pub request: Option<RefOr<Schema>>,
    /// The success status, what it means, and its body.
    pub success: (u16, &'static str, RefOr<Schema>),
    /// Statuses besides success, each with the problem types it is answered with.
    pub problems: Vec<(u16, Vec<&'static str>)>,
}

/// A path parameter: its name, meaning and what it accepts.
pub struct Param {
    pub name: &'static str,
    pub meaning: &'static str,
    pub schema: RefOr<Schema>,
}

impl Param {
    pub fn new(name: &'static str, meaning: &'static str, schema: RefOr<Schema>) -> Self {
        Self {
            name,
            meaning,
            schema,
        }
    }

    /// A UUID (a token's `jti`).
    pub fn uuid(name: &'static str, meaning: &'static str) -> Self {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .into();
        Self::new(name, meaning, schema)
    }
}

/// What [`crate::reference`] accepts: a code or id of 1 to 64 letters, digits, `_` or `-`.
pub fn reference() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z0-9_-]{1,64}$"))
        .into()
}

/// A document under construction: endpoints and the schemas they refer to.
pub struct ApiDoc {
    title: String,
    description: &'static str,
    paths: PathsBuilder,
    schemas: Vec<(String, RefOr<Schema>)>,
    /// Whether an endpoint requires a customer's access token (declares the scheme).
    customers: bool,
    /// OpenAPI 3.1 `webhooks`: what this service sends, by name.
    webhooks: serde_json::Map<String, serde_json::Value>,
}

/// A request this service sends to its users' endpoints (an OpenAPI 3.1 webhook).
pub struct Webhook {
    /// Its name in `webhooks` (the event type).
    pub name: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
    /// The body it carries.
    pub body: RefOr<Schema>,
}

/// The security scheme of the customer endpoints: a bearer access token...
pub const CUSTOMER_SCHEME: &str = "customerAccessToken";
/// ... or a DPoP-bound one (`Authorization: DPoP <token>`, RFC 9449 section 7.1) ...
pub const CUSTOMER_DPOP_SCHEME: &str = "customerDpopAccessToken";
/// ... with its proof in the `DPoP` header.
pub const DPOP_PROOF_SCHEME: &str = "dpopProof";

impl ApiDoc {
    pub fn new(service: &str, description: &'static str) -> Self {
        let mut doc = Self {
            title: format!("ctr {service}"),
            description,
            paths: PathsBuilder::new(),
            schemas: Vec::new(),
            customers: false,
            webhooks: serde_json::Map::new(),
        };
        doc.schema::<ProblemSchema>();
        doc
    }

    /// A Standard Webhooks delivery this service POSTs: the body, the three headers that
    /// identify, time and sign it, and the answers that end it.
    pub fn webhook(&mut self, webhook: Webhook) {
        let header = |name: &str, description: &str| {
            serde_json::json!({
                "name": name,
                "in": "header",
                "required": true,
                "description": description,
                "schema": {"type": "string"},
            })
        };
        let body = serde_json::to_value(&webhook.body).unwrap_or_default();
        self.webhooks.insert(
            webhook.name.to_owned(),
            serde_json::json!({
                "post": {
                    "summary": webhook.summary,
                    "description": webhook.description,
                    "operationId": webhook.name.replace('.', "_"),
                    "parameters": [
                        header("webhook-id", "The event's id (`evt_...`): the same on every retry; deduplicate by it."),
                        header("webhook-timestamp", "When this attempt was sent, in Unix seconds: refuse one more than five minutes from your clock."),
                        header("webhook-signature", "`v1,<base64 HMAC-SHA256 of id.timestamp.body>` under each current `whsec_` secret, separated by spaces (two during a rotation)."),
                    ],
                    "requestBody": {
                        "required": true,
                        "content": {"application/json": {"schema": body}},
                    },
                    "responses": {
                        "2XX": {"description": "Received: the delivery ends."},
                        "default": {"description": "Anything else, or no answer within the timeout: retried with backoff, then failed."},
                    },
                },
            }),
        );
    }

    /// Registers `T` (and the schemas it refers to) and answers a reference to it.
    pub fn schema<T: ToSchema>(&mut self) -> RefOr<Schema> {
        T::schemas(&mut self.schemas);
        self.named(&T::name(), T::schema())
    }

    /// Registers a schema built in code under `name` and answers a reference to it.
    pub fn named(&mut self, name: &str, schema: RefOr<Schema>) -> RefOr<Schema> {
        if !self.schemas.iter().any(|(n, _)| n == name) {
            self.schemas.push((name.to_owned(), schema));
        }
        Ref::from_schema_name(name).into()
    }

    /// An endpoint for customers: it requires an access token granting `scope`, and answers
    /// the authentication problems besides its own.
    pub fn customer_endpoint(&mut self, e: Endpoint, scope: &'static str) {
        self.customer_endpoint_with(e, scope, false);
    }

    /// A customer's endpoint that makes something and takes an `Idempotency-Key`
    /// ([`crate::idempotency`]): the header and its problems are declared with it.
    pub fn idempotent_customer_endpoint(&mut self, mut e: Endpoint, scope: &'static str) {
        for (status, slug) in crate::idempotency::PROBLEMS {
            e.problems.push((status, vec![slug]));
        }
        self.customer_endpoint_with(e, scope, true);
    }

    fn customer_endpoint_with(&mut self, mut e: Endpoint, scope: &'static str, idempotent: bool) {
        self.customers = true;
        e.problems.extend([
            (400, vec!["authorization-header-invalid"]),
            (401, ctr_access::AccessError::UNAUTHORIZED.to_vec()),
            (401, ctr_access::dpop::DpopError::SLUGS.to_vec()),
            (403, vec!["insufficient-scope"]),
            (503, vec!["auth-issuer-unavailable", "store-unavailable"]),
        ]);
        let requirements = vec![
            SecurityRequirement::new(CUSTOMER_SCHEME, [scope]),
            SecurityRequirement::new(CUSTOMER_DPOP_SCHEME, [scope])
                .add(DPOP_PROOF_SCHEME, Vec::<String>::new()),
        ];
        self.add(e, requirements, idempotent);
    }

    /// A public endpoint (no access token).
    pub fn endpoint(&mut self, e: Endpoint) {
        self.add(e, Vec::new(), false);
    }

    fn add(&mut self, e: Endpoint, security: Vec<SecurityRequirement>, idempotent: bool) {
        let mut op = OperationBuilder::new()
            .operation_id(Some(e.operation_id))
            .summary(Some(e.summary))
            .description(Some(e.description));
        for param in e.params {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(param.name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some(param.meaning))
                    .schema(Some(param.schema)),
            );
        }
        if idempotent {
            op = op.parameter(idempotency_key_header());
        }
        for requirement in security {
            op = op.security(requirement);
        }
        let mut problems = e.problems;
        if let Some(request) = e.request {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(request)).build(),
                    )
                    .build(),
            ));
            problems.extend([
                (400, vec!["malformed-json", "bad-request"]),
                (413, vec!["body-too-large"]),
                (415, vec!["unsupported-media-type"]),
                (422, vec!["invalid-request"]),
            ]);
        }
        problems.push((503, vec!["overloaded", "request-timeout"]));
        problems.push((500, vec!["internal"]));
        let (status, meaning, body) = e.success;
        op = op.response(
            status.to_string(),
            ResponseBuilder::new().description(meaning).content(
                "application/json",
                ContentBuilder::new().schema(Some(body)).build(),
            ),
        );
        // One entry per status: the problem types of a status merged.
        let mut merged: Vec<(u16, Vec<&'static str>)> = Vec::new();
        for (status, slugs) in problems {
            match merged.iter_mut().find(|(s, _)| *s == status) {
                Some((_, existing)) => existing.extend(slugs),
                None => merged.push((status, slugs)),
            }
        }
        merged.sort_by_key(|(status, _)| *status);
        for (status, slugs) in merged {
            op = op.response(status.to_string(), problem_response(&slugs));
        }
        op = op.response(
            "default",
            problem_response(&["route-not-found", "method-not-allowed"]),
        );
        self.paths = std::mem::take(&mut self.paths).path(e.path, PathItem::new(e.method, op));
    }

    pub fn build(self) -> OpenApi {
        let mut components = ComponentsBuilder::new();
        let mut schemas = self.schemas;
        schemas.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, schema) in schemas {
            components = components.schema(name, schema);
        }
        if self.customers {
            components = components.security_scheme(
                CUSTOMER_SCHEME,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .description(Some(
                            "An OAuth 2.0 access token (RFC 9068, `typ: at+jwt`) from the \
                             issuer in `CTR_AUTH_ISSUER`, for this API's audience; its `sub` is \
                             the customer. The scopes each operation needs are listed with it. \
                             A DPoP-bound token (`cnf.jkt`) is refused here: send it with the \
                             DPoP scheme.",
                        ))
                        .build(),
                ),
            );
            components = components.security_scheme(
                CUSTOMER_DPOP_SCHEME,
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    "Authorization",
                    "`DPoP <access token>` (RFC 9449 section 7.1): an access token bound to \
                     the client's key (`cnf.jkt`), from the same issuer and with the same \
                     scopes as the bearer scheme; OpenAPI has no `http` scheme for DPoP, so \
                     the header is described here. Requires a `DPoP` proof with every request.",
                ))),
            );
            components = components.security_scheme(
                DPOP_PROOF_SCHEME,
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    "DPoP",
                    "A DPoP proof (RFC 9449 section 4): a JWT with `typ: dpop+jwt`, an \
                     asymmetric `alg` (ES256, ES384, EdDSA, PS256, RS256 by default), the \
                     public `jwk` of the key the access token is bound to, `htm` and `htu` of \
                     this request, a fresh `iat` and `jti` (each proof is accepted once, by \
                     any replica), and `ath`, the base64url SHA-256 of the access token. No \
                     server nonce is asked for.",
                ))),
            );
        }
        let mut doc = OpenApiBuilder::new()
            .info(
                InfoBuilder::new()
                    .title(self.title)
                    .version(env!("CARGO_PKG_VERSION"))
                    .description(Some(self.description))
                    .build(),
            )
            .paths(self.paths.build())
            .components(Some(components.build()))
            .build();
        if !self.webhooks.is_empty() {
            // utoipa has no field for OpenAPI 3.1's top-level `webhooks`; its extensions are
            // written at the top level, as the field is.
            let mut top = utoipa::openapi::extensions::Extensions::default();
            top.insert(
                "webhooks".to_owned(),
                serde_json::Value::Object(self.webhooks),
            );
            doc.extensions = Some(top);
        }
        doc
    }
}

/// The `Idempotency-Key` request header (draft-ietf-httpapi-idempotency-key-header-09).
fn idempotency_key_header() -> ParameterBuilder {
    ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes a retry safe (draft-ietf-httpapi-idempotency-key-header-09): a Structured \
             Field string of 1 to 255 printable characters, such as \
             `\"8e03978e-40d5-43e8-bc93-6894a57f9324\"`, fresh for each new request and the \
             same on its retries. The key is the customer's own, for this operation. A retry \
             of the same request (method, path and body) gets the first answer again, with \
             `Idempotent-Replayed: true`, and changes nothing; another request under the key \
             is 422 `idempotency-key-reused`; a retry while the first request still runs is \
             409 `idempotency-request-outstanding`. Kept `CTR_IDEMPOTENCY_TTL` (24 h by \
             default); required when the service runs with `CTR_IDEMPOTENCY_REQUIRED=true` \
             (400 `idempotency-key-missing`).",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(3))
                .max_length(Some(512))
                .pattern(Some(r#"^"([ !#-\[\]-~]|\\["\\])+"$"#)),
        ))
}

fn problem_response(slugs: &[&str]) -> ResponseBuilder {
    let listed = slugs
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ");
    ResponseBuilder::new()
        .description(format!("A problem: {listed}"))
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
}

/// The document as pretty JSON with a trailing newline: what is served and committed.
pub fn to_json(doc: &OpenApi) -> String {
    let mut json = doc.to_pretty_json().unwrap_or_else(|_| "{}".into());
    json.push('\n');
    json
}

/// `/service/v1/openapi.json` and `/service/v1/docs`.
pub fn routes(doc: &OpenApi) -> Router {
    let json: Arc<str> = to_json(doc).into();
    let page = Html(DOCS_PAGE.replace("{{title}}", &doc.info.title));
    Router::new()
        .route(
            OPENAPI_PATH,
            get(move || {
                let json = json.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        json.to_string(),
                    )
                        .into_response()
                }
            }),
        )
        .route(DOCS_PATH, get(move || std::future::ready(page.clone())))
}

/// A self-contained page: it fetches the document from the same service and lists every
/// operation with its parameters, body, answers and the schemas, with no script or style from
/// anywhere else (it works offline and under a strict content security policy).
const DOCS_PAGE: &str = include_str!("docs.html");
