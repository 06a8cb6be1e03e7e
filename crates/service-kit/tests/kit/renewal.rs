//! Certificates renewed on disk under a running service: served from the next handshake,
//! with a connection opened before the renewal answering throughout.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ctr_service_kit::testing::TestPki;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::helpers::TestApp;

async fn connect(addr: SocketAddr, root: &Path) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut config = rustls::ClientConfig::builder_with_provider(ctr_pki::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(ctr_pki::root_store(root).unwrap())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let stream = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), stream)
        .await
        .unwrap()
}

/// The serial number and end of validity of the leaf a new handshake with `addr` is served.
async fn served_leaf(addr: SocketAddr, root: &Path) -> (Vec<u8>, SystemTime) {
    let tls = connect(addr, root).await;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(cert.validity().not_after.timestamp()).unwrap());
    (cert.raw_serial().to_vec(), not_after)
}

/// Sends `GET /service/v1/hello` over one HTTP/2 connection until `stop`; the answers that
/// were 200, and every failure.
async fn keep_asking(
    addr: SocketAddr,
    root: std::path::PathBuf,
    stop: CancellationToken,
) -> (u32, Vec<String>) {
    let tls = connect(addr, &root).await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let (mut ok, mut failures) = (0, Vec::new());
    while !stop.is_cancelled() {
        let request = hyper::Request::get("https://127.0.0.1/service/v1/hello")
            .body(Empty::<Bytes>::new())
            .unwrap();
        match sender.send_request(request).await {
            Ok(response) if response.status() == 200 => ok += 1,
            Ok(response) => failures.push(format!("answered {}", response.status())),
            Err(error) => failures.push(error.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if connection.is_finished() {
        failures.push("the connection ended".into());
    }
    (ok, failures)
}

async fn admin_json(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.client().get(app.admin_url(path)).send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or_default(),
    )
}

async fn metrics(app: &TestApp) -> String {
    app.client()
        .get(app.admin_url("/admin/v1/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn leaves_renewed_on_disk_are_served_while_an_open_connection_keeps_answering() {
    let pki = TestPki::with_leaf_validity(Duration::from_secs(60));
    let app = TestApp::spawn_on(pki, |config| {
        config.tls_reload_interval = Duration::from_millis(100);
        config.tls_expiry_window = Duration::from_secs(90);
    })
    .await;
    app.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    let root = app.pki.root();

    // A minute-long leaf is within the 90 s window: not ready, naming the certificate.
    let (status, problem) = admin_json(&app, "/admin/v1/readyz").await;
    assert_eq!(status, 503, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("certificate:server") && detail.contains("`coupons`"),
        "{detail}"
    );
    let (old_serial, old_not_after) = served_leaf(app.public, &root).await;
    assert!(old_not_after < SystemTime::now() + Duration::from_secs(61));
    let gauge = format!(
        r#"ctr_tls_certificate_expiry_timestamp_seconds{{tls="server",role="leaf",subject="coupons"}} {}"#,
        unix(old_not_after)
    );
    assert!(metrics(&app).await.contains(&gauge), "missing {gauge}");

    let stop = CancellationToken::new();
    let asking = tokio::spawn(keep_asking(app.public, root.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.pki.renew_leaves(Duration::from_secs(90 * 86_400));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (new_serial, new_not_after) = loop {
        let served = served_leaf(app.public, &root).await;
        if served.0 != old_serial {
            break served;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(new_serial, old_serial);
    assert!(new_not_after > SystemTime::now() + Duration::from_secs(89 * 86_400));
    // The admin listener serves the same renewed leaf.
    assert_eq!(served_leaf(app.admin, &root).await.0, new_serial);

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let (ok, failures) = asking.await.unwrap();
    assert!(failures.is_empty(), "requests failed: {failures:?}");
    assert!(ok >= 20, "only {ok} requests were answered");

    let (status, ready) = admin_json(&app, "/admin/v1/readyz").await;
    assert_eq!(status, 200, "{ready}");
    let gauge = format!(
        r#"ctr_tls_certificate_expiry_timestamp_seconds{{tls="server",role="leaf",subject="coupons"}} {}"#,
        unix(new_not_after)
    );
    let metrics = metrics(&app).await;
    assert!(metrics.contains(&gauge), "missing {gauge} in\n{metrics}");
    assert!(
        !metrics.contains(&unix(old_not_after).to_string()),
        "the old leaf's expiry is still published"
    );
}

#[tokio::test]
async fn a_half_written_renewal_is_refused_and_the_certificate_in_use_kept() {
    let app = TestApp::spawn_with(|config| {
        config.tls_reload_interval = Duration::from_millis(50);
    })
    .await;
    let root = app.pki.root();
    let (serial, _) = served_leaf(app.public, &root).await;
    // A certificate whose key has not been written yet: the pair does not match.
    let files = ctr_pki::IdentityFiles::server(app.pki.dir(), "coupons");
    let other = ctr_pki::IdentityFiles::server(app.pki.dir(), "points");
    std::fs::copy(&other.cert, &files.cert).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_leaf(app.public, &root).await.0, serial);
    // Once the key follows, the pair is whole and served.
    std::fs::copy(&other.key, &files.key).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while served_leaf(app.public, &root).await.0 == serial {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the whole pair was not taken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
