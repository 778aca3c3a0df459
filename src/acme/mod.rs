//! Certificates from an ACME CA (RFC 8555) for `tls.acme.domains`, like GitLab's
//! Let's Encrypt integration: obtained on first start, stored in `tls.acme.state_dir`,
//! renewed in the background `renew_before` expiry, swapped into the TLS resolver
//! without a restart. Until the first certificate arrives the names are served with a
//! self-signed placeholder; the old certificate serves until a new one is in place.
//!
//! - `client`: the ACME exchange (account, order, challenges, finalize) via instant-acme.
//! - `challenges`: pending http-01 and tls-alpn-01 answers the listeners serve.
//! - `store`: account and certificates on disk in `tls.acme.state_dir`.

pub(crate) mod challenges;
mod client;
mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::AcmeSettings;
use crate::metrics::metrics;
use crate::tls::{certified_key_from_pem, CertResolver, ManagedCert};
use challenges::Challenges;
use client::AcmeClient;
pub(crate) use client::AcmeError;
use store::Store;

/// First retry after a failed order; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// One whole order (account, validation, issuance) may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Sleeps are cut into pieces this long so a changed wall clock is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// How long the placeholder certificate claims to be valid.
const PLACEHOLDER_DAYS: i64 = 7;

/// The background service that keeps the ACME certificate current.
pub(crate) struct AcmeService {
    settings: AcmeSettings,
    resolver: Arc<CertResolver>,
    store: Arc<Store>,
    client: AcmeClient,
    /// `notAfter` of the certificate in force; `None` while the placeholder serves.
    initial_expiry: Option<i64>,
}

impl AcmeService {
    /// Opens the state directory and puts its certificate, or a placeholder, in force.
    pub(crate) fn new(
        settings: AcmeSettings,
        resolver: Arc<CertResolver>,
        challenges: Arc<Challenges>,
    ) -> Result<AcmeService, AcmeError> {
        let store = Arc::new(Store::open(&settings.state_dir)?);
        let initial_expiry = install_stored(&settings, &resolver, &store);
        if initial_expiry.is_none() {
            let placeholder = placeholder(&settings.domains).map_err(AcmeError::Generate)?;
            resolver.set_managed(placeholder);
            tracing::warn!(
                names = %settings.domains.join(","),
                "tls.acme: no certificate yet; serving a self-signed placeholder until the CA issues one"
            );
        }
        Ok(AcmeService {
            client: AcmeClient::new(settings.clone(), store.clone(), challenges),
            settings,
            resolver,
            store,
            initial_expiry,
        })
    }

    /// Checks, stores and serves a new certificate; returns its `notAfter`.
    fn install(&self, issued: client::Issued) -> Result<i64, String> {
        let key = certified_key_from_pem(&issued.chain_pem, &issued.key_pem)
            .map_err(|e| e.to_string())?;
        let leaf = key.cert.first().ok_or("empty certificate chain")?;
        let not_after = crate::tls::not_after(leaf).ok_or("unreadable certificate")?;
        self.resolver.set_managed(ManagedCert {
            names: self.settings.domains.clone(),
            key: Arc::new(key),
        });
        record_expiry(&self.settings.domains, not_after);
        // Served from memory even if the disk fails; the next start orders again.
        if let Err(e) = self
            .store
            .save_certificate(&issued.chain_pem, &issued.key_pem)
        {
            tracing::error!(
                "tls.acme: new certificate in force but not saved: {}",
                crate::report::chain(&e)
            );
        }
        Ok(not_after)
    }

    /// How long until the certificate expiring at `not_after` is due for renewal.
    fn due_in(&self, not_after: i64) -> Duration {
        let renew_at = not_after - self.settings.renew_before.as_secs() as i64;
        Duration::from_secs((renew_at - unix_now()).max(0) as u64)
    }
}

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let names = self.settings.domains.join(",");
        let mut expiry = self.initial_expiry;
        let mut failures: u32 = 0;
        // The least time between two successful orders, so a renew_before longer than
        // the certificate's lifetime cannot turn into a tight loop of orders.
        let mut floor = Duration::ZERO;
        loop {
            let wait = if failures > 0 {
                backoff(failures)
            } else {
                expiry.map_or(Duration::ZERO, |t| self.due_in(t).max(floor))
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
                    _ = shutdown.changed() => return,
                }
                if wait > MAX_SLEEP && failures == 0 {
                    continue;
                }
            }
            let attempt = tokio::select! {
                result = tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.obtain()) => result,
                _ = shutdown.changed() => return,
            };
            let result = match attempt {
                Ok(Ok(issued)) => self.install(issued),
                Ok(Err(e)) => Err(crate::report::chain(&e)),
                Err(_) => Err(format!("no certificate within {ATTEMPT_TIMEOUT:?}")),
            };
            match result {
                Ok(not_after) => {
                    failures = 0;
                    metrics().acme_orders.with_label_values(&["ok"]).inc();
                    metrics().acme_consecutive_failures.set(0);
                    let lifetime = Duration::from_secs((not_after - unix_now()).max(0) as u64);
                    floor = lifetime / 10;
                    if self.due_in(not_after) < floor {
                        tracing::warn!(
                            "tls.acme.renew_before ({:?}) leaves less than a tenth of the certificate's lifetime ({lifetime:?}); renewing every {floor:?}",
                            self.settings.renew_before
                        );
                    }
                    tracing::info!(names = %names, not_after, "tls.acme: certificate issued and in force");
                    expiry = Some(not_after);
                }
                Err(e) => {
                    failures += 1;
                    metrics().acme_orders.with_label_values(&["failed"]).inc();
                    metrics().acme_consecutive_failures.set(i64::from(failures));
                    let still = if expiry.is_some() {
                        "the current certificate stays in force"
                    } else {
                        "the placeholder stays in force"
                    };
                    tracing::warn!(
                        names = %names,
                        attempt = failures,
                        retry_in = ?backoff(failures),
                        "tls.acme: order failed ({still}): {e}"
                    );
                }
            }
        }
    }
}

/// Puts the stored certificate in force when it names every configured domain.
fn install_stored(settings: &AcmeSettings, resolver: &CertResolver, store: &Store) -> Option<i64> {
    let stored = match store.certificate() {
        Ok(Some(stored)) => stored,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(
                "tls.acme: cannot use the stored certificate, ordering a new one: {}",
                crate::report::chain(&e)
            );
            return None;
        }
    };
    if let Some(missing) = settings.domains.iter().find(|d| !stored.names.contains(d)) {
        tracing::info!(
            "tls.acme: the stored certificate does not name {missing}; ordering a new one"
        );
        return None;
    }
    match certified_key_from_pem(&stored.chain_pem, &stored.key_pem) {
        Ok(key) => {
            resolver.set_managed(ManagedCert {
                names: settings.domains.clone(),
                key: Arc::new(key),
            });
            record_expiry(&settings.domains, stored.not_after);
            tracing::info!(
                names = %settings.domains.join(","),
                not_after = stored.not_after,
                "tls.acme: stored certificate in force"
            );
            Some(stored.not_after)
        }
        Err(e) => {
            tracing::warn!("tls.acme: stored certificate unusable ({e}); ordering a new one");
            None
        }
    }
}

/// A self-signed certificate for `names`, served until the CA issues the real one.
fn placeholder(names: &[String]) -> Result<ManagedCert, String> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "registry-edge ACME placeholder");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(PLACEHOLDER_DAYS);
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let certified =
        crate::tls::certified_key(vec![cert.der().clone()], key_der).map_err(|e| e.to_string())?;
    Ok(ManagedCert {
        names: names.to_vec(),
        key: Arc::new(certified),
    })
}

fn record_expiry(names: &[String], not_after: i64) {
    for name in names {
        metrics()
            .acme_certificate_expiry
            .with_label_values(&[name])
            .set(not_after);
    }
}

fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(5), Duration::from_secs(160));
        assert_eq!(backoff(9), Duration::from_secs(2560));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn placeholder_names_the_domains() {
        let cert = placeholder(&["a.test".into(), "b.test".into()]).unwrap();
        let names = crate::tls::certificate_names(&cert.key.cert[0]);
        assert_eq!(names, vec!["a.test", "b.test"]);
    }
}
