use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use ctr_service_kit::testing::TestPki;
use ctr_service_kit::{
    ApiJson, App, ClientAuth, Health, Metrics, RelayCaller, ServerConfig, Service,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

pub struct TestApp {
    pub pki: TestPki,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub ready: Arc<AtomicBool>,
    pub stopped: tokio::task::JoinHandle<()>,
    /// Notified when `/service/v1/slow` has started.
    pub entered: Arc<Notify>,
}

fn routes(entered: Arc<Notify>) -> Router {
    Router::new()
        .route(
            "/service/v1/hello",
            get(|| async { ApiJson(json!({"hello": "world"})) }),
        )
        .route(
            "/service/v1/echo",
            post(|ApiJson(body): ApiJson<Value>| async move { ApiJson(body) }),
        )
        .route(
            "/service/v1/slow",
            get(move || async move {
                entered.notify_one();
                tokio::time::sleep(Duration::from_millis(700)).await;
                ApiJson(json!({"slow": true}))
            }),
        )
        .route(
            "/service/v1/redirect",
            get(|| async {
                (
                    axum::http::StatusCode::TEMPORARY_REDIRECT,
                    [("location", "https://attacker.example/steal")],
                )
            }),
        )
        .route(
            "/service/v1/relay-only",
            post(|_: RelayCaller| async { ApiJson(json!({"caller": "order-processing"})) }),
        )
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// As [`Self::spawn`], with the server config adjusted by `tune` (its limits).
    pub async fn spawn_with(tune: fn(&mut ServerConfig)) -> Self {
        Self::spawn_on(TestPki::new(), tune).await
    }

    /// As [`Self::spawn_with`], on `pki`.
    pub async fn spawn_on(pki: TestPki, tune: fn(&mut ServerConfig)) -> Self {
        let health = Health::default();
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        health.register("warmed-up", move || {
            if flag.load(Ordering::SeqCst) {
                Ok("warm".into())
            } else {
                Err("still cold".into())
            }
        });
        let entered = Arc::new(Notify::new());
        let service = Service {
            name: "coupons",
            client_auth: ClientAuth::Optional,
        };
        let mut config = pki.server_config("coupons");
        tune(&mut config);
        let app = App::build(
            service,
            &config,
            routes(entered.clone()),
            health,
            Metrics::default(),
        )
        .await
        .unwrap();
        let (public, admin) = (app.public_addr(), app.admin_addr());
        let stopped = tokio::spawn(async move { app.run_until_stopped().await.unwrap() });
        Self {
            pki,
            public,
            admin,
            ready,
            stopped,
            entered,
        }
    }

    pub fn public_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.public.port())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.admin.port())
    }

    pub fn client(&self) -> reqwest::Client {
        self.pki.client(None)
    }
}
