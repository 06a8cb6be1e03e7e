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

/// The four services behind one client.
pub struct Stack {
    pub endpoints: Endpoints,
    client: reqwest::Client,
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
        Ok(Self { endpoints, client })
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

    pub async fn post(&self, url: String, body: &Value) -> Result<Answer, Unreachable> {
        self.send(self.client.post(url).json(body)).await
    }

    pub async fn get(&self, url: String) -> Result<Answer, Unreachable> {
        self.send(self.client.get(url)).await
    }

    pub async fn create_order(
        &self,
        customer: &str,
        amount: u64,
        currency: &str,
    ) -> Result<Answer, Unreachable> {
        self.post(
            format!("{}/service/v1/orders", self.endpoints.relay_url),
            &json!({"customer_id": customer, "total": {"amount": amount, "currency": currency}}),
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
        customer: &str,
        details: Value,
    ) -> Result<Answer, Unreachable> {
        let mut body = json!({"order_processing_id": order, "customer_id": customer});
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

    pub async fn points_balance(&self, customer: &str) -> Result<Answer, Unreachable> {
        self.get(format!(
            "{}/service/v1/points/{customer}",
            self.endpoints.points_url
        ))
        .await
    }
}
