//! Talking to the CA with instant-acme: the account (created once, then restored from
//! the state directory) and one order for all configured names.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, ChallengeType, HttpClient, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use super::challenges::Challenges;
use super::store::{AcmeStoreError, Store};
use crate::config::{AcmeChallenge, AcmeSettings};

/// How long to wait for a TCP connection to the CA.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the CA may take to validate, and then to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(500))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("tls.acme.ca_roots {}: {reason}", path.display())]
    Roots { path: PathBuf, reason: String },
    #[error("{0}")]
    Protocol(#[from] instant_acme::Error),
    #[error("state directory: {0}")]
    Store(#[from] AcmeStoreError),
    #[error("the CA offers no {challenge} challenge for {name}")]
    NoChallenge {
        name: String,
        challenge: &'static str,
    },
    #[error("authorization for {name} is {status:?}")]
    Authorization {
        name: String,
        status: AuthorizationStatus,
    },
    #[error("order ended {0:?} instead of ready")]
    Order(OrderStatus),
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
}

/// A certificate chain and its key, as PEM.
pub(super) struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

pub(super) struct AcmeClient {
    settings: AcmeSettings,
    store: Arc<Store>,
    challenges: Arc<Challenges>,
    /// Restored or created on first use, then reused for every renewal.
    account: tokio::sync::Mutex<Option<Account>>,
}

impl AcmeClient {
    pub(super) fn new(
        settings: AcmeSettings,
        store: Arc<Store>,
        challenges: Arc<Challenges>,
    ) -> Self {
        AcmeClient {
            settings,
            store,
            challenges,
            account: tokio::sync::Mutex::new(None),
        }
    }

    /// Orders a certificate for every configured name and waits for it.
    pub(super) async fn obtain(&self) -> Result<Issued, AcmeError> {
        let account = self.account().await?;
        let result = self.order(&account).await;
        // Whatever happened, nothing is pending any more.
        self.challenges.clear();
        result
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let mut cached = self.account.lock().await;
        if let Some(account) = cached.as_ref() {
            return Ok(account.clone());
        }
        let directory = &self.settings.directory;
        let builder = Account::builder_with_http(http_client(self.settings.ca_roots.as_deref())?);
        let account = match self.store.account(directory)? {
            Some(credentials) => builder.from_credentials(credentials).await?,
            None => {
                let contact: Vec<&str> = self.settings.contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, credentials) = builder.create(&new, directory.clone(), None).await?;
                self.store.save_account(directory, credentials)?;
                tracing::info!(directory = %directory, "ACME account created");
                account
            }
        };
        *cached = Some(account.clone());
        Ok(account)
    }

    async fn order(&self, account: &Account) -> Result<Issued, AcmeError> {
        let identifiers: Vec<Identifier> = self
            .settings
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        let (challenge_type, challenge_name) = match self.settings.challenge {
            AcmeChallenge::Http01 => (ChallengeType::Http01, "http-01"),
            AcmeChallenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            let name = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                // Validated recently for this account: nothing to answer.
                AuthorizationStatus::Valid => continue,
                status => return Err(AcmeError::Authorization { name, status }),
            }
            let mut challenge =
                authz
                    .challenge(challenge_type.clone())
                    .ok_or(AcmeError::NoChallenge {
                        name: name.clone(),
                        challenge: challenge_name,
                    })?;
            let key_authorization = challenge.key_authorization();
            match self.settings.challenge {
                AcmeChallenge::Http01 => self
                    .challenges
                    .add_http01(&challenge.token, key_authorization.as_str()),
                AcmeChallenge::TlsAlpn01 => self
                    .challenges
                    .add_tls_alpn01(&name, key_authorization.digest().as_ref())
                    .map_err(|e| AcmeError::Generate(e.to_string()))?,
            }
            challenge.set_ready().await?;
        }
        let status = order.poll_ready(&POLL).await?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Order(status));
        }
        let key_pem = order.finalize().await?;
        let chain_pem = order.poll_certificate(&POLL).await?;
        Ok(Issued { chain_pem, key_pem })
    }
}

/// An HTTPS client trusting the system's roots plus `ca_roots`.
fn http_client(ca_roots: Option<&Path>) -> Result<Box<dyn HttpClient>, AcmeError> {
    let tls = (*crate::tls::client_config(ca_roots)?).clone();
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    tcp.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    let client: HyperClient<_, BodyWrapper<Bytes>> =
        HyperClient::builder(TokioExecutor::new()).build(https);
    Ok(Box::new(client))
}

impl From<crate::tls::RootsError> for AcmeError {
    fn from(e: crate::tls::RootsError) -> AcmeError {
        AcmeError::Roots {
            path: e.path,
            reason: e.reason,
        }
    }
}
