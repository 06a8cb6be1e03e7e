#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::path::Path;
use std::process::Command;

use ctr_pki::{IdentityFiles, LeafSpec, PkiSpec, certificate_names, load_certs};

fn generate(dir: &Path, tiers: u8) {
    let spec = PkiSpec {
        tiers,
        servers: vec![LeafSpec {
            name: "coupons".into(),
            dns_names: vec!["coupons.internal".into()],
        }],
        clients: vec![LeafSpec::new("order-processing")],
        ..PkiSpec::default()
    };
    spec.generate().unwrap().write_to(dir).unwrap();
}

fn openssl_verify(dir: &Path, leaf: &Path, purpose: &str) -> std::process::Output {
    // The leaf file holds the chain; openssl wants the leaf alone and the CAs as -untrusted.
    let leaf_only = dir.join("leaf-only.pem");
    let pem = std::fs::read_to_string(leaf).unwrap();
    let end = pem.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----\n".len();
    std::fs::write(&leaf_only, &pem[..end]).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
        .arg(dir.join("root.pem"));
    if std::fs::metadata(dir.join("intermediates.pem"))
        .unwrap()
        .len()
        > 0
    {
        cmd.arg("-untrusted").arg(dir.join("intermediates.pem"));
    }
    cmd.arg(&leaf_only)
        .output()
        .expect("openssl must be installed")
}

#[test]
fn chains_of_every_supported_length_verify_with_openssl() {
    for tiers in 2..=4 {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), tiers);
        let server = IdentityFiles::server(dir.path(), "coupons");
        let client = IdentityFiles::client(dir.path(), "order-processing");
        assert_eq!(
            load_certs(&server.cert).unwrap().len(),
            usize::from(tiers) - 1,
            "leaf + CAs below the root"
        );
        for (leaf, purpose) in [(&server.cert, "sslserver"), (&client.cert, "sslclient")] {
            let out = openssl_verify(dir.path(), leaf, purpose);
            assert!(
                out.status.success(),
                "{tiers} tiers, {purpose}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

#[test]
fn a_server_leaf_does_not_verify_as_a_client_and_vice_versa() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 3);
    let out = openssl_verify(
        dir.path(),
        &IdentityFiles::server(dir.path(), "coupons").cert,
        "sslclient",
    );
    assert!(
        !out.status.success(),
        "a server leaf must not carry clientAuth"
    );
    let out = openssl_verify(
        dir.path(),
        &IdentityFiles::client(dir.path(), "order-processing").cert,
        "sslserver",
    );
    assert!(
        !out.status.success(),
        "a client leaf must not carry serverAuth"
    );
}

#[test]
fn leaves_name_their_service_and_loopback() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 3);
    let server = &load_certs(&IdentityFiles::server(dir.path(), "coupons").cert).unwrap()[0];
    for name in ["coupons", "coupons.internal", "localhost", "127.0.0.1"] {
        assert!(
            certificate_names(server, name),
            "the coupons leaf must name {name}"
        );
    }
    assert!(!certificate_names(server, "points"));
    let client =
        &load_certs(&IdentityFiles::client(dir.path(), "order-processing").cert).unwrap()[0];
    assert!(certificate_names(client, "order-processing"));
    assert!(!certificate_names(client, "coupons"));
}

#[cfg(unix)]
#[test]
fn private_keys_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 3);
    let mode = std::fs::metadata(IdentityFiles::server(dir.path(), "coupons").key)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn the_cli_writes_a_pki_once_and_keeps_it_on_a_second_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_ctr-pki"))
            .args(["init", "--out"])
            .arg(dir.path())
            .args([
                "--service",
                "coupons",
                "--service",
                "points=points.example",
                "--client",
                "order-processing",
            ])
            .output()
            .unwrap()
    };
    assert!(run().status.success());
    let root = std::fs::read(dir.path().join("root.pem")).unwrap();
    assert!(dir.path().join("points/server.key").exists());
    assert!(dir.path().join("order-processing/client.pem").exists());
    assert!(run().status.success());
    assert_eq!(
        std::fs::read(dir.path().join("root.pem")).unwrap(),
        root,
        "a second run keeps the PKI"
    );
}

#[test]
fn an_unsupported_chain_length_is_refused() {
    let spec = PkiSpec {
        tiers: 1,
        ..PkiSpec::default()
    };
    assert!(
        spec.generate()
            .unwrap_err()
            .to_string()
            .contains("2 to 5 tiers")
    );
}

#[test]
fn a_missing_certificate_file_is_named_in_the_error() {
    let error = load_certs(Path::new("/nonexistent/server.pem")).unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/server.pem"),
        "{error}"
    );
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_delivery_holds_the_trust_anchors_and_the_services_own_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("pki");
    let relay = dir.path().join("relay");
    let coupons = dir.path().join("coupons");
    std::fs::create_dir_all(coupons.join("order-processing")).unwrap();
    std::fs::write(coupons.join("order-processing/client.key"), "stale").unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_ctr-pki"))
        .args(["init", "--out"])
        .arg(&master)
        .args(["--service=coupons", "--service=order-processing"])
        .args(["--client=order-processing"])
        .arg(format!("--deliver=coupons={}", coupons.display()))
        .arg(format!("--deliver=order-processing={}", relay.display()))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        files_under(&coupons),
        [
            "coupons/server.key",
            "coupons/server.pem",
            "intermediates.pem",
            "root.pem"
        ],
        "a stale file of another identity is removed too"
    );
    assert_eq!(
        files_under(&relay),
        [
            "intermediates.pem",
            "order-processing/client.key",
            "order-processing/client.pem",
            "order-processing/server.key",
            "order-processing/server.pem",
            "root.pem"
        ]
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(relay.join("order-processing/client.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let unknown = Command::new(env!("CARGO_BIN_EXE_ctr-pki"))
        .args(["init", "--out"])
        .arg(&master)
        .arg(format!(
            "--deliver=points={}",
            dir.path().join("points").display()
        ))
        .output()
        .unwrap();
    assert!(
        !unknown.status.success(),
        "an identity the PKI lacks is an error"
    );
}

fn not_after(pem_file: &Path) -> std::time::SystemTime {
    let leaf = &load_certs(pem_file).unwrap()[0];
    ctr_pki::certificate_info(leaf, ctr_pki::CertificateRole::Leaf, pem_file)
        .unwrap()
        .not_after
}

fn init(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ctr-pki"))
        .args(["init", "--out"])
        .arg(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn init_on_an_existing_pki_renews_the_leaves_about_to_expire_and_keeps_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("pki");
    let delivered = dir.path().join("coupons");
    let deliver = format!("--deliver=coupons={}", delivered.display());
    let stack = [
        "--service=coupons",
        "--service=points",
        "--client=order-processing",
    ];
    let args = |extra: &[&str]| -> Vec<String> {
        stack
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .chain([deliver.clone()])
            .collect()
    };
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let args = args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        init(&master, &args, env)
    };
    // A stack whose leaves have ten minutes left.
    let (ok, out) = run(&["--leaf-validity=10m"], &[]);
    assert!(ok, "{out}");
    let root = std::fs::read(master.join("root.pem")).unwrap();
    let coupons = IdentityFiles::server(&master, "coupons");
    let old_cert = std::fs::read(&coupons.cert).unwrap();
    let old_key = std::fs::read(&coupons.key).unwrap();
    assert!(
        not_after(&coupons.cert)
            < std::time::SystemTime::now() + std::time::Duration::from_secs(601)
    );

    // The next start renews every leaf (within the default 30 days), keeps the root and
    // delivers the renewed files.
    let (ok, out) = run(&[], &[]);
    assert!(ok, "{out}");
    for line in [
        "renewed coupons's server certificate: it expires at",
        "renewed points's server certificate",
        "renewed order-processing's client certificate",
    ] {
        assert!(out.contains(line), "missing `{line}` in\n{out}");
    }
    assert_eq!(std::fs::read(master.join("root.pem")).unwrap(), root);
    let new_cert = std::fs::read(&coupons.cert).unwrap();
    assert_ne!(new_cert, old_cert);
    assert_ne!(
        std::fs::read(&coupons.key).unwrap(),
        old_key,
        "a renewal makes a new key"
    );
    assert!(
        not_after(&coupons.cert)
            > std::time::SystemTime::now() + std::time::Duration::from_secs(89 * 86_400)
    );
    for (leaf, purpose) in [
        (coupons.cert.clone(), "sslserver"),
        (
            IdentityFiles::client(&master, "order-processing").cert,
            "sslclient",
        ),
    ] {
        let verified = openssl_verify(&master, &leaf, purpose);
        assert!(
            verified.status.success(),
            "{}",
            String::from_utf8_lossy(&verified.stdout)
        );
    }
    assert_eq!(
        std::fs::read(IdentityFiles::server(&delivered, "coupons").cert).unwrap(),
        new_cert,
        "the service's own volume gets the renewed certificate"
    );

    // Leaves with 90 days left are kept, byte for byte.
    let (ok, out) = run(&[], &[]);
    assert!(
        ok && out.contains("kept coupons's server certificate: valid until"),
        "{out}"
    );
    assert_eq!(std::fs::read(&coupons.cert).unwrap(), new_cert);

    // A leaf whose names changed is reissued; CTR_PKI_RENEW_ALL renews every leaf.
    let (ok, out) = run(&["--service=coupons=coupons.example"], &[]);
    assert!(
        ok && out.contains("renewed coupons's server certificate: it names"),
        "{out}"
    );
    assert!(certificate_names(
        &load_certs(&coupons.cert).unwrap()[0],
        "coupons.example"
    ));
    let (ok, out) = run(
        &["--service=coupons=coupons.example"],
        &[("CTR_PKI_RENEW_ALL", "true")],
    );
    assert!(
        ok && out.contains("renewed points's server certificate: every leaf"),
        "{out}"
    );
    assert!(!out.contains("kept"), "{out}");
    assert_eq!(std::fs::read(master.join("root.pem")).unwrap(), root);
}

#[test]
fn a_renewal_interrupted_between_its_key_and_its_certificate_is_repaired_by_the_next_round() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("pki");
    let args = ["--service=coupons", "--client=order-processing"];
    let (ok, out) = init(&master, &args, &[]);
    assert!(ok, "{out}");
    let coupons = IdentityFiles::server(&master, "coupons");
    let root = master.join("root.pem");

    // The key was renamed into place, the certificate was not: a new key beside the old one.
    let elsewhere = dir.path().join("elsewhere");
    generate(&elsewhere, 3);
    std::fs::copy(
        IdentityFiles::server(&elsewhere, "coupons").key,
        &coupons.key,
    )
    .unwrap();
    assert!(
        ctr_pki::TlsFiles::load(&root, Some(&coupons)).is_err(),
        "no service can use that pair"
    );

    let (ok, out) = init(&master, &args, &[]);
    assert!(
        ok && out.contains("renewed coupons's server certificate: its key does not match"),
        "{out}"
    );
    ctr_pki::TlsFiles::load(&root, Some(&coupons)).expect("a pair again");
}

#[test]
fn the_issuing_key_stays_with_the_pki_and_without_it_renewal_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("pki");
    let delivered = dir.path().join("coupons");
    let deliver = format!("--deliver=coupons={}", delivered.display());
    let (ok, out) = init(
        &master,
        &["--service=coupons", "--leaf-validity=10m", &deliver],
        &[],
    );
    assert!(ok, "{out}");
    assert!(master.join("ca/issuing.key").exists());
    assert!(
        files_under(&delivered)
            .iter()
            .all(|f| !f.starts_with("ca/")),
        "no service is given the issuing CA"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(master.join("ca/issuing.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A PKI made before the issuing key was kept: nothing to renew is fine; a renewal due is
    // a warning naming the way out while the leaves are valid, and an error once one expired.
    std::fs::remove_dir_all(master.join("ca")).unwrap();
    let (ok, out) = init(&master, &["--service=coupons", "--renew-within=1m"], &[]);
    assert!(ok && !out.contains("warning"), "{out}");
    let (ok, out) = init(&master, &["--service=coupons"], &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: ")
            && out.contains("ca/issuing.key is missing")
            && out.contains("--force"),
        "{out}"
    );
    let expired = dir.path().join("expired");
    let (ok, out) = init(&expired, &["--service=coupons", "--leaf-validity=1s"], &[]);
    assert!(ok, "{out}");
    std::fs::remove_dir_all(expired.join("ca")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (ok, out) = init(&expired, &["--service=coupons"], &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("ca/issuing.key is missing") && !out.contains("warning"),
        "{out}"
    );
}

#[tokio::test]
async fn a_reloaded_client_identity_is_presented_at_the_next_handshake() {
    use std::sync::Arc;

    use ctr_pki::{ClientAuth, TlsFiles};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let spec = PkiSpec {
        servers: vec![LeafSpec::new("coupons")],
        clients: vec![LeafSpec::new("order-processing")],
        ..PkiSpec::default()
    };
    spec.generate().unwrap().write_to(dir.path()).unwrap();
    let root = dir.path().join("root.pem");
    let server =
        TlsFiles::load(&root, Some(&IdentityFiles::server(dir.path(), "coupons"))).unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(server.server_config(ClientAuth::Required).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The server answers each connection with the serial of the client certificate it verified.
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(stream).await else {
                continue;
            };
            let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
            let serial = cert.raw_serial().to_vec();
            let _ = tls.write_all(&serial).await;
            let _ = tls.shutdown().await;
        }
    });
    let client = TlsFiles::load(
        &root,
        Some(&IdentityFiles::client(dir.path(), "order-processing")),
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client.client_config().unwrap()));
    let presented = || async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("coupons").unwrap();
        let mut tls = connector.connect(name, stream).await.unwrap();
        let mut serial = Vec::new();
        tls.read_to_end(&mut serial).await.unwrap();
        serial
    };
    let before = presented().await;
    assert!(!client.reload().unwrap(), "nothing changed yet");
    spec.renew(
        dir.path(),
        std::time::Duration::MAX,
        std::time::SystemTime::now(),
    )
    .unwrap();
    assert!(client.reload().unwrap());
    let after = presented().await;
    assert_ne!(after, before, "the renewed client certificate is presented");
    assert!(
        server.reload().unwrap(),
        "the server's renewed leaf is read too"
    );
    assert_eq!(presented().await.len(), after.len());
}

#[test]
fn the_renewer_renews_each_leaf_again_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("pki");
    // Leaves of 3 s renewed within 2 s of their end, checked every 200 ms.
    let mut renewer = Command::new(env!("CARGO_BIN_EXE_ctr-pki"))
        .args(["init", "--out"])
        .arg(&master)
        .args([
            "--service=coupons",
            "--leaf-validity=3s",
            "--renew-within=2s",
            "--every=200ms",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cert = IdentityFiles::server(&master, "coupons").cert;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cert.exists() {
        assert!(std::time::Instant::now() < deadline, "no PKI was written");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut seen = vec![not_after(&cert)];
    while seen.len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let current = not_after(&cert);
        if Some(&current) != seen.last() {
            seen.push(current);
        }
    }
    renewer.kill().unwrap();
    let _ = renewer.wait();
    assert!(seen.len() >= 3, "renewed {} times in 20 s", seen.len() - 1);
    assert!(seen.windows(2).all(|w| w[1] > w[0]));
}
