//! The stack as the CLI sees it: four base URLs, one HTTPS client trusting the root CA, and
//! answers as (status, JSON body).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

/// Where the stack is; flags or `CTR_` variables, compose's published ports by default.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoints {
    /// The relay (order-processing).
    #[arg(
        long,
        env = "CTR_RELAY_URL",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    pub relay_url: String,
    /// Coupons.
    #[arg(
        long,
        env = "CTR_COUPONS_URL",
        default_value = "https://127.0.0.1:8444",
        global = true
    )]
    pub coupons_url: String,
    /// Points.
    #[arg(
        long,
        env = "CTR_POINTS_URL",
        default_value = "https://127.0.0.1:8445",
        global = true
    )]
    pub points_url: String,
    /// Payments.
    #[arg(
        long,
        env = "CTR_PAYMENTS_URL",
        default_value = "https://127.0.0.1:8446",
        global = true
    )]
    pub payments_url: String,
    /// The root CA the stack's certificates chain to (compose exports it to .ctr/root.pem).
    #[arg(long, env = "CTR_CA", default_value = ".ctr/root.pem", global = true)]
    pub ca: PathBuf,
    /// The customer to act as: `ctr` logs in as this client at the issuer (the compose
    /// stack's development issuer) unless CTR_ACCESS_TOKEN holds a token.
    #[arg(long, env = "CTR_CUSTOMER", default_value = "c_alice", global = true)]
    pub customer: String,
    /// The OAuth issuer `ctr login` asks for tokens (its OpenID Connect discovery names the
    /// token endpoint).
    #[arg(
        long,
        env = "CTR_ISSUER_URL",
        default_value = "https://127.0.0.1:8447",
        global = true
    )]
    pub issuer_url: String,
    /// The client secret of the customer's client at the issuer (the development issuer's
    /// demo secret by default).
    #[arg(
        long,
        env = "CTR_CLIENT_SECRET",
        default_value = "demo-secret",
        hide_env_values = true,
        hide_default_value = true,
        global = true
    )]
    pub client_secret: String,
    /// An access token from any issuer the stack trusts; when set, `ctr` sends it and logs
    /// in nowhere. Only from the environment, so that it never shows in a process list.
    #[arg(skip = std::env::var("CTR_ACCESS_TOKEN").ok().filter(|t| !t.trim().is_empty()))]
    pub access_token: Option<String>,
}

/// `endpoint`'s path and query on `base`'s origin, when the two origins differ.
fn rebased(endpoint: &str, base: &str) -> Option<String> {
    let endpoint = reqwest::Url::parse(endpoint).ok()?;
    let mut local = reqwest::Url::parse(base).ok()?;
    if endpoint.origin() == local.origin() {
        return None;
    }
    local.set_path(endpoint.path());
    local.set_query(endpoint.query());
    Some(local.to_string())
}

/// A request that got no HTTP answer, or a setup that cannot work: exit code 2.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An HTTP answer: its status and its JSON body (`null` when it had none).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The slug of a problem answer's `type` (`order-not-open`), or "".
    pub fn problem(&self) -> &str {
        self.body["type"]
            .as_str()
            .and_then(|t| t.rsplit('/').next())
            .unwrap_or("")
    }

    pub fn field(&self, name: &str) -> String {
        self.body[name].as_str().unwrap_or_default().to_owned()
    }
}

/// The four services behind one client, acting as one customer.
pub struct Stack {
    pub endpoints: Endpoints,
    client: reqwest::Client,
    /// The customer's access token, fetched at the first request that needs it.
    token: tokio::sync::OnceCell<String>,
}

/// A domain the customer confirms a choice with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Domain {
    Coupons,
    Points,
    Payments,
}

impl Domain {
    pub fn name(self) -> &'static str {
        match self {
            Self::Coupons => "coupons",
            Self::Points => "points",
            Self::Payments => "payments",
        }
    }
}

impl Stack {
    pub fn connect(endpoints: Endpoints) -> Result<Self, Unreachable> {
        if !endpoints.ca.is_file() {
            return Err(Unreachable(format!(
                "no root CA at {}: start the stack (`docker compose up -d`) in the repository root, or pass --ca / CTR_CA",
                endpoints.ca.display()
            )));
        }
        let client = ctr_pki::reqwest_builder(&endpoints.ca, None)
            .map_err(|e| Unreachable(format!("{}: {e}", endpoints.ca.display())))?
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Unreachable(e.to_string()))?;
        Ok(Self {
            endpoints,
            client,
            token: tokio::sync::OnceCell::new(),
        })
    }

    /// The customer this stack acts as: the access token's `sub` when one is given.
    pub fn customer(&self) -> String {
        self.endpoints
            .access_token
            .as_deref()
            .and_then(crate::token::subject)
            .unwrap_or_else(|| self.endpoints.customer.clone())
    }

    /// An access token for `customer` from the issuer: OpenID Connect discovery names the
    /// token endpoint; the client-credentials grant with the customer's client.
    pub async fn login(&self, customer: &str) -> Result<String, Unreachable> {
        let issuer = self.endpoints.issuer_url.trim_end_matches('/');
        let discovery = self
            .send(
                self.client
                    .get(format!("{issuer}/.well-known/openid-configuration")),
            )
            .await?;
        let endpoint = discovery.body["token_endpoint"]
            .as_str()
            .ok_or_else(|| {
                Unreachable(format!(
                    "{issuer} answered no OpenID Connect discovery document ({})",
                    discovery.status
                ))
            })?
            .to_owned();
        let secret = &self.endpoints.client_secret;
        let grant = |url: String| async move {
            ctr_access::client_credentials(&self.client, &url, customer, secret, None).await
        };
        let token = match grant(endpoint.clone()).await {
            // The metadata names the issuer as its services reach it (compose: dev-issuer:8443);
            // this machine reaches it at --issuer-url: ask there.
            Err(ctr_access::GrantError::Unreachable(reason)) => match rebased(&endpoint, issuer) {
                Some(local) => grant(local).await,
                None => return Err(Unreachable(reason)),
            },
            answer => answer,
        };
        token.map_err(|error| match error {
            ctr_access::GrantError::Unreachable(reason) => Unreachable(reason),
            ctr_access::GrantError::Refused { status, error, .. } => Unreachable(format!(
                "the issuer refused to log {customer} in: {status} {error}"
            )),
        })
    }

    /// The token requests carry: CTR_ACCESS_TOKEN, else one logged in for the customer.
    async fn bearer(&self) -> Result<&str, Unreachable> {
        self.token
            .get_or_try_init(|| async {
                match &self.endpoints.access_token {
                    Some(token) => Ok(token.clone()),
                    None => self.login(&self.endpoints.customer).await,
                }
            })
            .await
            .map(String::as_str)
    }

    fn base(&self, domain: Domain) -> &str {
        match domain {
            Domain::Coupons => &self.endpoints.coupons_url,
            Domain::Points => &self.endpoints.points_url,
            Domain::Payments => &self.endpoints.payments_url,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, Unreachable> {
        let response = request.send().await.map_err(|e| {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message = format!("{message}: {cause}");
                source = cause.source();
            }
            Unreachable(message)
        })?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    /// POSTs `body` as the customer.
    pub async fn post(&self, url: String, body: &Value) -> Result<Answer, Unreachable> {
        let token = self.bearer().await?;
        self.send(self.client.post(url).bearer_auth(token).json(body))
            .await
    }

    /// GETs `url` as the customer.
    pub async fn get(&self, url: String) -> Result<Answer, Unreachable> {
        let token = self.bearer().await?;
        self.send(self.client.get(url).bearer_auth(token)).await
    }

    /// GETs `url` with `token` (none: no credential at all).
    pub async fn get_with(&self, url: String, token: Option<&str>) -> Result<Answer, Unreachable> {
        let request = self.client.get(url);
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        self.send(request).await
    }

    pub async fn create_order(&self, amount: u64, currency: &str) -> Result<Answer, Unreachable> {
        self.post(
            format!("{}/service/v1/orders", self.endpoints.relay_url),
            &json!({"total": {"amount": amount, "currency": currency}}),
        )
        .await
    }

    pub async fn order(&self, order: &str) -> Result<Answer, Unreachable> {
        self.get(format!(
            "{}/service/v1/orders/{order}",
            self.endpoints.relay_url
        ))
        .await
    }

    /// A confirmation: `details` is the domain's part of the request.
    pub async fn confirm(
        &self,
        domain: Domain,
        order: &str,
        details: Value,
    ) -> Result<Answer, Unreachable> {
        let mut body = json!({"order_processing_id": order});
        if let (Value::Object(body), Value::Object(details)) = (&mut body, details) {
            body.extend(details);
        }
        self.post(
            format!(
                "{}/service/v1/{}/confirmations",
                self.base(domain),
                domain.name()
            ),
            &body,
        )
        .await
    }

    pub async fn checkout(&self, order: &str, tokens: &[String]) -> Result<Answer, Unreachable> {
        self.post(
            format!(
                "{}/service/v1/orders/{order}/checkout",
                self.endpoints.relay_url
            ),
            &json!({ "tokens": tokens }),
        )
        .await
    }

    /// The customer's own points.
    pub async fn points_balance(&self) -> Result<Answer, Unreachable> {
        self.get(format!(
            "{}/service/v1/points/{}",
            self.endpoints.points_url,
            self.customer()
        ))
        .await
    }
}
