//! Everything a configuration names, read and checked: the config file, certificates, the
//! token-signing key, users and the trusted issuers' certificates. `check` and `run` (and a reload) all go through
//! [`load_all`], so `check` validates exactly what `run` would use.

use std::path::Path;

use crate::auth::token::TrustedIssuers;
use crate::auth::Auth;
use crate::config::{self, Config, ConfigError};
use crate::tls::CertSet;

/// Everything `run` loads from disk, validated.
pub struct Loaded {
    pub config: Config,
    pub(crate) certificates: Option<CertSet>,
    pub(crate) auth: Option<Auth>,
    pub(crate) trusted: TrustedIssuers,
}

/// Loads and validates the configuration and every file it names.
pub fn load_all(path: &Path) -> Result<Loaded, ConfigError> {
    pingora::tls::install_default_crypto_provider();
    let config = config::load(path)?;

    let certificates = if config.certificates.is_empty() {
        None
    } else {
        Some(
            CertSet::load(&config.certificates).map_err(|(index, e)| ConfigError::Invalid {
                path: config.source.clone(),
                key: format!("tls.certificates[{index}].{}", e.field()),
                problem: e.to_string(),
            })?,
        )
    };
    if let Some(path) = config.acme.as_ref().and_then(|a| a.ca_roots.as_ref()) {
        crate::tls::client_config(Some(path)).map_err(|e| ConfigError::Invalid {
            path: config.source.clone(),
            key: "tls.acme.ca_roots".into(),
            problem: crate::acme::AcmeError::from(e).to_string(),
        })?;
    }
    let auth = match &config.auth {
        None => None,
        Some(settings) => Some(Auth::load(settings).map_err(|e| ConfigError::Invalid {
            path: config.source.clone(),
            key: e.key(settings),
            problem: e.to_string(),
        })?),
    };
    let trusted = TrustedIssuers::load(&config.trusted_issuers).map_err(|(index, e)| {
        ConfigError::Invalid {
            path: config.source.clone(),
            key: format!("auth.trusted_issuers[{index}].certificates"),
            problem: e.to_string(),
        }
    })?;
    Ok(Loaded {
        config,
        certificates,
        auth,
        trusted,
    })
}
