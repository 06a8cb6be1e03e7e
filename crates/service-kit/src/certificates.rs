//! Certificates that renew under a running service: its TLS files are read again every
//! `CTR_TLS_RELOAD_INTERVAL` and, when they changed into a usable whole, the next handshakes
//! use them (open connections keep theirs; nothing is restarted). Each certificate's expiry
//! is a metric, and readiness fails, naming the certificate, once one expires within
//! `CTR_TLS_EXPIRY_WINDOW`: before any client sees a handshake fail.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use ctr_pki::{CertificateInfo, TlsFiles};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::{Health, Metrics, ServerConfig};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CertificateLabels {
    /// What the files are to the service: `server` (both listeners) or `client` (mTLS).
    pub tls: &'static str,
    /// `leaf`, `chain` (an intermediate sent with it) or `root` (a trust anchor).
    pub role: &'static str,
    pub subject: String,
}

/// `ctr_tls_certificate_expiry_timestamp_seconds`: when each certificate in use expires.
pub(crate) type ExpiryFamily = Family<CertificateLabels, Gauge>;

/// Watches `files` as the service's `tls` files (`server`, `client`): reloads them every
/// `CTR_TLS_RELOAD_INTERVAL`, keeps their expiry metrics current and registers the
/// readiness check `certificate:<tls>`. The watch ends when `files` is dropped.
pub fn watch_certificates(
    tls: &'static str,
    files: &Arc<TlsFiles>,
    config: &ServerConfig,
    health: &Health,
    metrics: &Metrics,
) {
    let window = config.tls_expiry_window;
    let checked = Arc::downgrade(files);
    health.register(format!("certificate:{tls}"), move || {
        let Some(files) = checked.upgrade() else {
            return Err("no longer watched".into());
        };
        expiry_check(&files.certificates(), window, SystemTime::now())
    });
    let expiry = metrics.certificate_expiry.clone();
    let mut shown = publish(&expiry, tls, &files.certificates(), &[]);
    let watched: Weak<TlsFiles> = Arc::downgrade(files);
    let interval = config.tls_reload_interval;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(files) = watched.upgrade() else {
                return;
            };
            match files.reload() {
                Ok(false) => {}
                Ok(true) => {
                    let certificates = files.certificates();
                    for cert in certificates
                        .iter()
                        .filter(|c| c.role == ctr_pki::CertificateRole::Leaf)
                    {
                        tracing::info!(
                            tls,
                            file = %cert.file.display(),
                            subject = cert.subject,
                            not_after = %humantime::format_rfc3339_seconds(cert.not_after),
                            "TLS certificate reloaded"
                        );
                    }
                    shown = publish(&expiry, tls, &certificates, &shown);
                }
                Err(error) => tracing::warn!(
                    tls,
                    %error,
                    "TLS files changed but are not usable; the certificates in use are kept until they are"
                ),
            }
        }
    });
}

/// Sets a gauge per certificate, removing those of certificates no longer in use.
fn publish(
    expiry: &ExpiryFamily,
    tls: &'static str,
    certificates: &[CertificateInfo],
    before: &[CertificateLabels],
) -> Vec<CertificateLabels> {
    for labels in before {
        expiry.remove(labels);
    }
    certificates
        .iter()
        .map(|cert| {
            let labels = CertificateLabels {
                tls,
                role: cert.role.as_str(),
                subject: cert.subject.clone(),
            };
            let seconds = cert
                .not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            expiry.get_or_create(&labels).set(seconds);
            labels
        })
        .collect()
}

/// Passes while every certificate is valid beyond `window`; else names the first to expire.
fn expiry_check(
    certificates: &[CertificateInfo],
    window: Duration,
    now: SystemTime,
) -> Result<String, String> {
    let Some(first) = certificates.iter().min_by_key(|c| c.not_after) else {
        return Err("no certificate loaded".into());
    };
    let remaining = first.remaining(now);
    let until = humantime::format_rfc3339_seconds(first.not_after);
    let what = format!(
        "the {} certificate `{}` in {}",
        first.role.as_str(),
        first.subject,
        first.file.display()
    );
    if remaining.is_zero() {
        return Err(format!("{what} expired at {until}"));
    }
    let left = humantime::format_duration(Duration::from_secs(remaining.as_secs()));
    if remaining <= window {
        return Err(format!(
            "{what} expires at {until}, in {left}: within CTR_TLS_EXPIRY_WINDOW ({}); renew it",
            humantime::format_duration(window)
        ));
    }
    Ok(format!("{what} expires first, at {until} (in {left})"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use std::path::PathBuf;

    use ctr_pki::CertificateRole;

    use super::*;

    fn cert(
        role: CertificateRole,
        subject: &str,
        in_secs: u64,
        now: SystemTime,
    ) -> CertificateInfo {
        CertificateInfo {
            role,
            file: PathBuf::from("/pki/coupons/server.pem"),
            subject: subject.into(),
            not_after: now + Duration::from_secs(in_secs),
        }
    }

    #[test]
    fn the_check_names_the_certificate_that_expires_first() {
        let now = SystemTime::now();
        let day = 86_400;
        let certs = [
            cert(CertificateRole::Leaf, "coupons", 60 * day, now),
            cert(CertificateRole::Root, "ctr root CA", 3000 * day, now),
        ];
        let pass = expiry_check(&certs, Duration::from_secs(day), now).unwrap();
        assert!(pass.contains("`coupons`"), "{pass}");
        let fail = expiry_check(&certs, Duration::from_secs(61 * day), now).unwrap_err();
        assert!(
            fail.contains("leaf certificate `coupons` in /pki/coupons/server.pem"),
            "{fail}"
        );
        assert!(fail.contains("CTR_TLS_EXPIRY_WINDOW"), "{fail}");
        let expired =
            expiry_check(&certs, Duration::ZERO, now + Duration::from_secs(61 * day)).unwrap_err();
        assert!(expired.contains("expired at"), "{expired}");
    }
}
