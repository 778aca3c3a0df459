//! `tls`: certificate files and ACME.

use std::path::PathBuf;
use std::time::Duration;

use super::choices::AcmeChallenge;
use super::error::ConfigError;
use super::file;
use super::keys::key_table;
use super::server::ServerSettings;
use super::validate::Validator;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Explicit SNI names; `None` means "the DNS names in the certificate".
    pub server_names: Option<Vec<String>>,
}

/// `tls.acme`: one certificate for `domains`, obtained and renewed from an ACME CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    pub directory: String,
    pub contact: Vec<String>,
    /// Lowercased DNS names.
    pub domains: Vec<String>,
    pub challenge: AcmeChallenge,
    pub state_dir: PathBuf,
    pub renew_before: Duration,
    pub ca_roots: Option<PathBuf>,
}

/// Default `tls.acme.renew_before`: Let's Encrypt certificates last 90 days.
const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// `tls`: the certificate files and ACME; the https listeners need one or the other.
pub(super) fn tls_settings(
    v: &Validator,
    server: &ServerSettings,
    tls: Option<file::TlsFile>,
) -> Result<(Vec<CertificatePaths>, Option<AcmeSettings>), ConfigError> {
    let (certificates, acme) = match tls {
        None => (Vec::new(), None),
        Some(file::TlsFile { certificates, acme }) => (
            certificate_paths(v, certificates)?,
            acme.map(|a| acme_settings(v, server, a)).transpose()?,
        ),
    };
    if !server.https_listen.is_empty() && certificates.is_empty() && acme.is_none() {
        return Err(v.invalid(
            "tls.certificates",
            "at least one certificate (or tls.acme) is needed for server.https_listen",
        ));
    }
    Ok((certificates, acme))
}

fn acme_settings(
    v: &Validator,
    server: &ServerSettings,
    acme: file::AcmeFile,
) -> Result<AcmeSettings, ConfigError> {
    let file::AcmeFile {
        directory,
        contact,
        domains,
        challenge,
        state_dir,
        renew_before,
        ca_roots,
    } = acme;
    check_acme_account(v, &directory, &contact)?;
    let domains = acme_domains(v, &domains)?;
    let challenge = challenge.unwrap_or_default();
    check_acme_listeners(v, server, challenge)?;
    let renew_before = v.duration(
        "tls.acme.renew_before",
        renew_before.as_deref(),
        DEFAULT_RENEW_BEFORE,
    )?;
    Ok(AcmeSettings {
        directory,
        contact,
        domains,
        challenge,
        state_dir: v.file_path(&state_dir),
        renew_before,
        ca_roots: ca_roots.map(|p| v.file_path(&p)),
    })
}

/// The CA's directory is an https:// URL; every contact a `mailto:` address.
fn check_acme_account(
    v: &Validator,
    directory: &str,
    contact: &[String],
) -> Result<(), ConfigError> {
    match url::Url::parse(directory) {
        Ok(url) if url.scheme() == "https" && url.host().is_some() => {}
        _ => {
            return Err(v.invalid(
                "tls.acme.directory",
                format!("{directory:?} is not an https:// URL"),
            ))
        }
    }
    if let Some((i, bad)) = contact
        .iter()
        .enumerate()
        .find(|(_, c)| !c.starts_with("mailto:") || c.len() == "mailto:".len())
    {
        return Err(v.invalid(
            format!("tls.acme.contact[{i}]"),
            format!("{bad:?} is not a mailto: address"),
        ));
    }
    Ok(())
}

/// The certificate's names, lowercased: at least one, each a name http-01 or tls-alpn-01
/// can validate.
fn acme_domains(v: &Validator, domains: &[String]) -> Result<Vec<String>, ConfigError> {
    if domains.is_empty() {
        return Err(v.invalid("tls.acme.domains", "at least one name is needed"));
    }
    let domains: Vec<String> = domains.iter().map(|d| d.to_ascii_lowercase()).collect();
    for (i, domain) in domains.iter().enumerate() {
        if !is_dns_name(domain) {
            let why = if domain.starts_with("*.") {
                "wildcards need the dns-01 challenge, which registry-edge does not do"
            } else {
                "not a DNS name"
            };
            return Err(v.invalid(
                format!("tls.acme.domains[{i}]"),
                format!("{domain:?}: {why}"),
            ));
        }
    }
    Ok(domains)
}

/// The certificate is served on the https listeners; http-01 is answered on the plain ones.
fn check_acme_listeners(
    v: &Validator,
    server: &ServerSettings,
    challenge: AcmeChallenge,
) -> Result<(), ConfigError> {
    if server.https_listen.is_empty() {
        return Err(v.invalid(
            "tls.acme",
            "needs server.https_listen to serve the certificate on",
        ));
    }
    if challenge == AcmeChallenge::Http01 && server.http_listen.is_empty() {
        return Err(v.invalid(
            "tls.acme.challenge",
            "http-01 is answered on server.http_listen, which is empty",
        ));
    }
    Ok(())
}

key_table! {
    // Certificate files are read again by every reload (the resolver swaps them).
    pub(super) CERTIFICATES = Live("tls.certificates");
    // The ACME task and its challenge answers are set up at start.
    pub(super) ACME = AtRestart("tls.acme");
}

/// A name a CA can validate with http-01 or tls-alpn-01: letters, digits, hyphens, dots.
pub(super) fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').count() >= 2
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn certificate_paths(
    v: &Validator,
    certificates: Vec<file::CertificateFile>,
) -> Result<Vec<CertificatePaths>, ConfigError> {
    certificates
        .into_iter()
        .enumerate()
        .map(
            |(
                i,
                file::CertificateFile {
                    cert,
                    key,
                    server_names,
                },
            )| {
                if let Some(names) = &server_names {
                    if let Some(bad) = names
                        .iter()
                        .find(|n| n.is_empty() || n.contains(['/', ' ', ':']))
                    {
                        return Err(v.invalid(
                            format!("tls.certificates[{i}].server_names"),
                            format!("{bad:?} is not a DNS name"),
                        ));
                    }
                }
                Ok(CertificatePaths {
                    cert: v.file_path(&cert),
                    key: v.file_path(&key),
                    server_names: server_names
                        .map(|names| names.iter().map(|n| n.to_ascii_lowercase()).collect()),
                })
            },
        )
        .collect()
}
