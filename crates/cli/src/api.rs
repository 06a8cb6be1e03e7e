//! The stack as the CLI sees it: four base URLs, one HTTPS client trusting the root CA, and
//! answers as (status, JSON body).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ctr_access::dpop::ProofKey;
use jsonwebtoken::Algorithm;

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
    /// The key `ctr` proves with (DPoP, RFC 9449): logins bind the access token to the
    /// customer's key of this kind and every request carries a proof signed with it; `off`
    /// asks for bearer tokens (where the stack accepts them).
    #[arg(
        long,
        env = "CTR_DPOP",
        value_enum,
        default_value = "es256",
        global = true
    )]
    pub dpop: DpopMode,
    /// Where each customer's DPoP key is kept (`<customer>-es256.pem`, mode 0600), and where
    /// a DPoP-bound CTR_ACCESS_TOKEN's key is looked up by its thumbprint.
    #[arg(long, env = "CTR_DPOP_KEY_DIR", global = true)]
    pub dpop_key_dir: Option<PathBuf>,
    /// A `ctr listen` receiver's `GET /events` (compose: https://receiver:8443/events): when
    /// set, the demo also checks that its orders' events were delivered there.
    #[arg(long, env = "CTR_EVENTS_URL", global = true)]
    pub events_url: Option<String>,
}

/// The kind of DPoP key a login binds its token to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DpopMode {
    /// P-256, ES256 proofs.
    Es256,
    /// P-384, ES384 proofs.
    Es384,
    /// No key: bearer tokens.
    Off,
}

/// An access token and, when it is DPoP-bound, the key that proves it.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub key: Option<Arc<ProofKey>>,
}

impl Endpoints {
    /// The DPoP key directory: `--dpop-key-dir`, else `$XDG_CONFIG_HOME/ctr/dpop`, else
    /// `~/.config/ctr/dpop`.
    pub fn key_dir(&self) -> Result<PathBuf, Unreachable> {
        if let Some(dir) = &self.dpop_key_dir {
            return Ok(dir.clone());
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
            .ok_or_else(|| {
                Unreachable("set --dpop-key-dir (no HOME to keep DPoP keys in)".into())
            })?;
        Ok(config.join("ctr").join("dpop"))
    }
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
    /// The customer's access token (and key), fetched at the first request that needs it.
    session: tokio::sync::OnceCell<Session>,
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
            session: tokio::sync::OnceCell::new(),
        })
    }

    /// This stack acting as `session`'s customer.
    pub fn acting_as(&self, session: Session) -> Self {
        Self {
            endpoints: self.endpoints.clone(),
            client: self.client.clone(),
            session: tokio::sync::OnceCell::new_with(Some(session)),
        }
    }

    /// The customer this stack acts as: the access token's `sub` when one is given.
    pub fn customer(&self) -> String {
        self.endpoints
            .access_token
            .as_deref()
            .and_then(crate::token::subject)
            .unwrap_or_else(|| self.endpoints.customer.clone())
    }

    /// A session for `customer`: with `--dpop` on, a new key and a token bound to it.
    pub async fn login(&self, customer: &str) -> Result<Session, Unreachable> {
        let key = match self.endpoints.dpop {
            DpopMode::Off => None,
            DpopMode::Es256 => Some(customer_key(
                self.endpoints.key_dir().ok(),
                customer,
                Algorithm::ES256,
            )?),
            DpopMode::Es384 => Some(customer_key(
                self.endpoints.key_dir().ok(),
                customer,
                Algorithm::ES384,
            )?),
        };
        self.login_with(customer, key).await
    }

    /// A session for `customer` whose token is bound to `key` (none: a bearer token).
    pub async fn login_with(
        &self,
        customer: &str,
        key: Option<ProofKey>,
    ) -> Result<Session, Unreachable> {
        let key = key.map(Arc::new);
        let token = self.token_for(customer, key.as_deref()).await?;
        Ok(Session { token, key })
    }

    /// An access token for `customer` from the issuer: OpenID Connect discovery names the
    /// token endpoint; the client-credentials grant with the customer's client, proving
    /// `key` when given.
    async fn token_for(
        &self,
        customer: &str,
        key: Option<&ProofKey>,
    ) -> Result<String, Unreachable> {
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
            ctr_access::client_credentials(&self.client, &url, customer, secret, None, key).await
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

    /// The session requests carry: CTR_ACCESS_TOKEN (with its key, found by its `cnf.jkt`,
    /// when it is DPoP-bound), else one logged in for the customer.
    async fn session(&self) -> Result<&Session, Unreachable> {
        self.session
            .get_or_try_init(|| async {
                match &self.endpoints.access_token {
                    Some(token) => Ok(Session {
                        token: token.clone(),
                        key: self.key_of(token)?.map(Arc::new),
                    }),
                    None => self.login(&self.endpoints.customer).await,
                }
            })
            .await
    }

    /// The key a DPoP-bound `token` needs: the key in the key directory whose thumbprint is
    /// the token's `cnf.jkt`; none for a bearer token.
    fn key_of(&self, token: &str) -> Result<Option<ProofKey>, Unreachable> {
        let Some(jkt) = crate::token::bound_key(token) else {
            return Ok(None);
        };
        let dir = self.endpoints.key_dir()?;
        key_in(&dir, &jkt).map(Some).ok_or_else(|| {
            Unreachable(format!(
                "CTR_ACCESS_TOKEN is DPoP-bound, but its key is not in {} (log in with `ctr login` on this machine, or pass --dpop-key-dir)",
                dir.display()
            ))
        })
    }

    /// A DPoP proof for one request with CTR_ACCESS_TOKEN and its key.
    pub fn proof(&self, method: &str, url: &str) -> Result<String, Unreachable> {
        let token = self.endpoints.access_token.as_deref().ok_or_else(|| {
            Unreachable("set CTR_ACCESS_TOKEN first: export CTR_ACCESS_TOKEN=$(ctr login)".into())
        })?;
        let key = self.key_of(token)?.ok_or_else(|| {
            Unreachable("CTR_ACCESS_TOKEN is a bearer token (no cnf.jkt): it needs no proof".into())
        })?;
        key.proof(method, url, Some(token))
            .map_err(|e| Unreachable(e.to_string()))
    }

    /// `request` with the session's credentials: `Bearer`, or `DPoP` and a fresh proof.
    fn authorize(
        request: reqwest::RequestBuilder,
        method: &str,
        url: &str,
        session: &Session,
    ) -> Result<reqwest::RequestBuilder, Unreachable> {
        Ok(match &session.key {
            None => request.bearer_auth(&session.token),
            Some(key) => {
                let proof = key
                    .proof(method, url, Some(&session.token))
                    .map_err(|e| Unreachable(e.to_string()))?;
                request
                    .header(
                        reqwest::header::AUTHORIZATION,
                        format!("DPoP {}", session.token),
                    )
                    .header("DPoP", proof)
            }
        })
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

    /// How many times a POST that makes something is sent again, under the same
    /// `Idempotency-Key`, when no answer came or the service said to retry.
    const RETRIES: u32 = 3;

    /// POSTs `body` as the customer under a fresh `Idempotency-Key`, and again under the same
    /// key (with a fresh DPoP proof) when no answer came or the answer says to retry (503, or
    /// 409 `idempotency-request-outstanding`), at most [`Self::RETRIES`] times: the service makes
    /// what it asks for once, and a retry gets the first answer.
    pub async fn post_once(&self, url: String, body: &Value) -> Result<Answer, Unreachable> {
        let session = self.session().await?;
        let key = format!("\"{}\"", uuid::Uuid::now_v7());
        let mut retried = 0;
        loop {
            let request = Self::authorize(self.client.post(&url), "POST", &url, session)?
                .header("Idempotency-Key", &key);
            let answer = self.send(request.json(body)).await;
            let again = match &answer {
                Err(_) => true,
                Ok(answer) => {
                    answer.status == 503
                        || (answer.status == 409
                            && answer.body["type"]
                                .as_str()
                                .is_some_and(|t| t.ends_with("/idempotency-request-outstanding")))
                }
            };
            if !again || retried == Self::RETRIES {
                return answer;
            }
            retried += 1;
            tokio::time::sleep(std::time::Duration::from_millis(250 << retried)).await;
        }
    }

    /// POSTs `body` with `session`'s access token and a proof made by `prover` (another key
    /// than the token's, for the demo's stolen-token scenario).
    pub async fn post_proved_by(
        &self,
        url: String,
        body: &Value,
        session: &Session,
        prover: ProofKey,
    ) -> Result<Answer, Unreachable> {
        let forged = Session {
            token: session.token.clone(),
            key: Some(Arc::new(prover)),
        };
        let request = Self::authorize(self.client.post(&url), "POST", &url, &forged)?;
        self.send(request.json(body)).await
    }

    /// GETs `url` as the customer.
    pub async fn get(&self, url: String) -> Result<Answer, Unreachable> {
        let session = self.session().await?;
        let request = Self::authorize(self.client.get(&url), "GET", &url, session)?;
        self.send(request).await
    }

    /// GETs `url` as `session` (none: no credential at all).
    pub async fn get_with(
        &self,
        url: String,
        session: Option<&Session>,
    ) -> Result<Answer, Unreachable> {
        let request = self.client.get(&url);
        let request = match session {
            Some(session) => Self::authorize(request, "GET", &url, session)?,
            None => request,
        };
        self.send(request).await
    }

    pub async fn create_order(&self, amount: u64, currency: &str) -> Result<Answer, Unreachable> {
        self.post_once(
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
        self.post_once(
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
        self.post_once(
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

/// The customer's DPoP key of kind `alg`, kept in the key directory `dir`
/// (`<customer>-es256.pem`) so that every `ctr` run for the customer proves the same key:
/// tokens confirmed by one command check out with the next. Made on first use; where it
/// cannot be kept (no directory, a customer name that is no file name, a read-only disk), a
/// key for this run only, with a warning.
fn customer_key(
    dir: Option<PathBuf>,
    customer: &str,
    alg: Algorithm,
) -> Result<ProofKey, Unreachable> {
    let fresh = || ProofKey::generate(alg).map_err(|e| Unreachable(e.to_string()));
    let name_ok = !customer.is_empty()
        && customer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let Some(dir) = dir.filter(|_| name_ok) else {
        return fresh();
    };
    let kind = format!("{alg:?}").to_ascii_lowercase();
    let file = dir.join(format!("{customer}-{kind}.pem"));
    match std::fs::read_to_string(&file) {
        Ok(pem) => {
            return ProofKey::from_pem(&pem)
                .map_err(|e| Unreachable(format!("{}: {e}", file.display())));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Unreachable(format!("{}: {e}", file.display())));
        }
        Err(_) => {}
    }
    let key = fresh()?;
    if let Err(error) = write_private(&dir, &file, key.pem()) {
        eprintln!(
            "ctr: the DPoP key could not be kept in {} ({error}); tokens confirmed in this run check out only in this run",
            dir.display()
        );
    }
    Ok(key)
}

/// The key in `dir` whose RFC 7638 thumbprint is `jkt`.
fn key_in(dir: &std::path::Path, jkt: &str) -> Option<ProofKey> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "pem"))
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .filter_map(|pem| ProofKey::from_pem(&pem).ok())
        .find(|key| key.thumbprint() == jkt)
}

/// Writes `contents` to `file` in `dir` readable by its owner only: the directory `0700`, the
/// file `0600`, synced under a temporary name and then renamed, so that it is never readable
/// half-written or by others.
fn write_private(
    dir: &std::path::Path,
    file: &std::path::Path,
    contents: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let staging = file.with_extension("pem.tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staging)?;
        std::io::Write::write_all(&mut out, contents.as_bytes())?;
        out.sync_all()?;
    }
    #[cfg(not(unix))]
    std::fs::write(&staging, contents)?;
    std::fs::rename(&staging, file)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn a_customer_keeps_one_private_key_that_its_tokens_find() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("dpop");
        let first = customer_key(Some(keys.clone()), "c_alice", Algorithm::ES256).unwrap();
        let again = customer_key(Some(keys.clone()), "c_alice", Algorithm::ES256).unwrap();
        assert_eq!(
            first.thumbprint(),
            again.thumbprint(),
            "the same key every run"
        );
        let p384 = customer_key(Some(keys.clone()), "c_alice", Algorithm::ES384).unwrap();
        assert_eq!(p384.algorithm(), Algorithm::ES384);
        let bob = customer_key(Some(keys.clone()), "c_bob", Algorithm::ES256).unwrap();
        assert_ne!(bob.thumbprint(), first.thumbprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&keys), 0o700);
            assert_eq!(mode(&keys.join("c_alice-es256.pem")), 0o600);
        }
        assert_eq!(
            key_in(&keys, first.thumbprint()).map(|k| k.thumbprint().to_owned()),
            Some(first.thumbprint().to_owned())
        );
        assert!(key_in(&keys, "unknown").is_none());
        // A name that is no file name, or no directory: a key for this run only.
        let odd = customer_key(Some(keys.clone()), "../x", Algorithm::ES256).unwrap();
        assert_ne!(
            odd.thumbprint(),
            customer_key(Some(keys.clone()), "../x", Algorithm::ES256)
                .unwrap()
                .thumbprint()
        );
        assert!(customer_key(None, "c_alice", Algorithm::ES256).is_ok());
        assert_eq!(std::fs::read_dir(&keys).unwrap().count(), 3);
    }
}
