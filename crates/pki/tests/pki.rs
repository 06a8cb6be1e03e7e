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
