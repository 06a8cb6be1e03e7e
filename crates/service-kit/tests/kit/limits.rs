//! What one client can hold of a service: requests in flight, connections, and time, over
//! real sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::helpers::TestApp;

/// A TLS 1.3 connection to `addr` trusting the app's root, offering `alpn`.
async fn connect(
    app: &TestApp,
    addr: SocketAddr,
    alpn: &[u8],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut config = rustls::ClientConfig::builder_with_provider(ctr_pki::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(ctr_pki::root_store(&app.pki.root()).unwrap())
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let stream = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), stream)
        .await
}

/// Reads until the server closes the connection (at most 5 s); answers what it sent and when
/// it closed.
async fn until_closed(tls: &mut TlsStream<TcpStream>) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buffer = [0u8; 4096];
        loop {
            match tls.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    (received, started.elapsed())
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_shed_with_503_and_retry_after() {
    let app = TestApp::spawn_with(|c| c.max_in_flight = 1).await;
    let client = app.client();
    let slow = tokio::spawn({
        let (client, url) = (client.clone(), app.public_url("/service/v1/slow"));
        async move { client.get(url).send().await.unwrap().status() }
    });
    app.entered.notified().await;
    let shed = client
        .get(app.public_url("/service/v1/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(shed.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = shed.json().await.unwrap();
    assert_eq!(body["type"], "https://ctr.dev/problems/overloaded");
    // The admin listener is not shed: probes keep answering.
    let live = client
        .get(app.admin_url("/admin/v1/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(slow.await.unwrap(), 200);
    let after = client
        .get(app.public_url("/service/v1/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200, "the slot is free again");
}

#[tokio::test]
async fn a_connection_beyond_the_limit_is_closed_and_a_freed_slot_is_reused() {
    let app = TestApp::spawn_with(|c| c.max_connections = 2).await;
    let first = connect(&app, app.public, b"http/1.1").await.unwrap();
    let _second = connect(&app, app.public, b"http/1.1").await.unwrap();
    let third = connect(&app, app.public, b"http/1.1").await;
    assert!(third.is_err(), "a third connection is refused");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if connect(&app, app.public, b"http/1.1").await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_idle_http1_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(|c| c.idle_timeout = Duration::from_millis(400)).await;
    let mut tls = connect(&app, app.public, b"http/1.1").await.unwrap();
    tls.write_all(b"GET /service/v1/hello HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (received, after) = until_closed(&mut tls).await;
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&received)
    );
    assert!(
        after >= Duration::from_millis(300),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn an_idle_http2_connection_is_sent_goaway_and_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(|c| c.idle_timeout = Duration::from_millis(400)).await;
    let mut tls = connect(&app, app.public, b"h2").await.unwrap();
    // The client preface and an empty SETTINGS frame: an HTTP/2 connection that asks nothing.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tls.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    // Read frames (9-byte header: length, type, flags, stream), acknowledging SETTINGS and
    // PING as a live client does, until the server closes.
    let started = Instant::now();
    let mut types = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut header = [0u8; 9];
            if tls.read_exact(&mut header).await.is_err() {
                return;
            }
            let length =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let mut payload = vec![0u8; length];
            if tls.read_exact(&mut payload).await.is_err() {
                return;
            }
            let (kind, ack) = (header[3], header[4] & 1 == 1);
            types.push(kind);
            let reply = match (kind, ack) {
                (4, false) => vec![0, 0, 0, 4, 1, 0, 0, 0, 0],
                (6, false) => [&[0, 0, 8, 6, 1, 0, 0, 0, 0][..], &payload].concat(),
                _ => continue,
            };
            if tls.write_all(&reply).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open; frames {types:?}"
    );
    assert!(types.contains(&7), "no GOAWAY among frame types {types:?}");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(300),
        "closed after {after:?}"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_head_is_dropped() {
    let app = TestApp::spawn_with(|c| c.header_read_timeout = Duration::from_millis(400)).await;
    let mut tls = connect(&app, app.public, b"http/1.1").await.unwrap();
    tls.write_all(b"GET /service/v1/hello HTTP/1.1\r\nhost:")
        .await
        .unwrap();
    let (_, after) = until_closed(&mut tls).await;
    assert!(after < Duration::from_secs(3), "closed after {after:?}");
}
