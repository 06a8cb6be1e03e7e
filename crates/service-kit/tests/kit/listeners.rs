//! TLS versions, trust, mTLS and shutdown, over real sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use ctr_pki::{LeafSpec, PkiSpec};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::helpers::TestApp;

async fn handshake(addr: SocketAddr, config: rustls::ClientConfig) -> Result<(), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector
        .connect(name, stream)
        .await
        .map_err(|e| e.to_string())?;
    // The server's verdict on a client certificate arrives after the client's handshake ends.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET /admin/v1/livez HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    if response.starts_with(b"HTTP/1.1") {
        Ok(())
    } else {
        Err("no HTTP response".into())
    }
}

fn client_config(
    app: &TestApp,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(ctr_pki::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ctr_pki::root_store(&app.pki.root()).unwrap())
        .with_no_client_auth()
}

#[tokio::test]
async fn a_tls_1_2_client_is_refused_on_both_listeners_and_tls_1_3_succeeds() {
    let app = TestApp::spawn().await;
    for addr in [app.public, app.admin] {
        let refused = handshake(addr, client_config(&app, &[&rustls::version::TLS12])).await;
        assert!(refused.is_err(), "TLS 1.2 must be refused on {addr}");
        handshake(addr, client_config(&app, &[&rustls::version::TLS13]))
            .await
            .expect("TLS 1.3 trusting our root");
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_our_root_cannot_connect() {
    let app = TestApp::spawn().await;
    let other = tempfile::tempdir().unwrap();
    PkiSpec {
        servers: vec![LeafSpec::new("x")],
        ..PkiSpec::default()
    }
    .generate()
    .unwrap()
    .write_to(other.path())
    .unwrap();
    let client = ctr_pki::reqwest_builder(&other.path().join("root.pem"), None)
        .unwrap()
        .build()
        .unwrap();
    assert!(
        client
            .get(app.public_url("/service/v1/hello"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn relay_only_routes_require_the_relay_certificate() {
    let app = TestApp::spawn().await;
    let url = app.public_url("/service/v1/relay-only");

    let relay = app.pki.client(Some("order-processing"));
    assert_eq!(
        relay.post(&url).send().await.unwrap().status(),
        200,
        "the relay's certificate is accepted"
    );

    let anonymous = app.client().post(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: serde_json::Value = anonymous.json().await.unwrap();
    assert_eq!(
        body["type"],
        "https://ctr.dev/problems/client-certificate-required"
    );

    let intruder = app
        .pki
        .client(Some("intruder"))
        .post(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(
        intruder.status(),
        403,
        "a certificate of our CA that names someone else"
    );

    // A certificate from another CA, even one naming order-processing, fails the handshake.
    let other = tempfile::tempdir().unwrap();
    PkiSpec {
        clients: vec![LeafSpec::new("order-processing")],
        ..PkiSpec::default()
    }
    .generate()
    .unwrap()
    .write_to(other.path())
    .unwrap();
    let forged = ctr_pki::reqwest_builder(
        &app.pki.root(),
        Some(&ctr_pki::IdentityFiles::client(
            other.path(),
            "order-processing",
        )),
    )
    .unwrap()
    .build()
    .unwrap();
    assert!(
        forged.post(&url).send().await.is_err(),
        "a foreign CA's client certificate must be refused"
    );
}

#[tokio::test]
async fn the_admin_listener_answers_on_127_0_0_1_only() {
    let app = TestApp::spawn().await;
    assert_eq!(app.admin.ip().to_string(), "127.0.0.1");
    assert!(TcpStream::connect(app.admin).await.is_ok());
    for other in ["127.0.0.2", "[::1]"] {
        let addr: SocketAddr = format!("{other}:{}", app.admin.port()).parse().unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the admin port must not answer on {addr}"
        );
    }
}

#[tokio::test]
async fn an_in_flight_request_completes_after_shutdown_begins_and_new_connections_are_refused() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let slow = tokio::spawn(client.get(app.public_url("/service/v1/slow")).send());
    app.entered.notified().await;
    let shutdown = client
        .post(app.admin_url("/admin/v1/shutdown"))
        .send()
        .await
        .unwrap();
    assert_eq!(shutdown.status(), 202);
    let response = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(response.status(), 200);
    app.stopped.await.unwrap();
    assert!(
        TcpStream::connect(app.public).await.is_err(),
        "new connections are refused after shutdown"
    );
    assert!(TcpStream::connect(app.admin).await.is_err());
}

#[tokio::test]
async fn a_stop_fails_readiness_first_serves_on_for_the_delay_and_livez_answers_while_draining() {
    let app = TestApp::spawn_with(|config| {
        config.shutdown_delay = std::time::Duration::from_millis(1500);
    })
    .await;
    app.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    let client = app.client();
    let ready = client.get(app.admin_url("/admin/v1/readyz")).send().await;
    assert_eq!(ready.unwrap().status(), 200);
    let slow = tokio::spawn(client.get(app.public_url("/service/v1/slow")).send());
    app.entered.notified().await;
    let stop = client
        .post(app.admin_url("/admin/v1/shutdown"))
        .send()
        .await
        .unwrap();
    assert_eq!(stop.status(), 202);
    // Within the delay: not ready, alive (draining), and the public listener still takes
    // new connections and requests.
    let ready = client
        .get(app.admin_url("/admin/v1/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("shutdown"));
    let live = client
        .get(app.admin_url("/admin/v1/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(
        live.json::<serde_json::Value>().await.unwrap()["draining"],
        true
    );
    let fresh = app.pki.client(None);
    let answered = fresh
        .get(app.public_url("/service/v1/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answered.status(),
        200,
        "a new connection is served during the delay"
    );
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    // Then the listeners stop.
    tokio::time::timeout(std::time::Duration::from_secs(10), app.stopped)
        .await
        .expect("the service stops after the delay")
        .unwrap();
    assert!(TcpStream::connect(app.public).await.is_err());
}
