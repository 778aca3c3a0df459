//! `gen-certs`: development TLS and token-signing material, made with rcgen.
//!
//! Replaces the openssl recipe of the registry docs. Private keys are written with
//! mode 0600 and never printed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DnType, IsCa, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};

/// File names written by [`generate`], relative to the target folder.
pub(crate) const TLS_CERT: &str = "tls.crt";
pub(crate) const TLS_KEY: &str = "tls.key";
pub(crate) const AUTH_KEY: &str = "registry-auth.key";
pub(crate) const AUTH_CERT: &str = "registry-auth.crt";

#[derive(Debug, thiserror::Error)]
pub enum CertGenError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("at least one --host is needed")]
    NoHosts,
    #[error("{}: cannot give it to uid {uid}, gid {gid} (changing owners needs root: run gen-certs with sudo): {source}", path.display())]
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
        source: std::io::Error,
    },
    #[error("--owner {uid}:{gid}: giving files to another user needs root (run gen-certs with sudo); nothing was written")]
    OwnerNeedsRoot { uid: u32, gid: u32 },
    #[error("--owner {0:?}: expected UID or UID:GID (numbers, e.g. 65532 for the container image's user)")]
    Owner(String),
}

/// `--owner UID[:GID]`: the account the service runs as (the container image runs as
/// 65532:65532), so it can read the keys, which stay mode 0600.
pub fn parse_owner(text: &str) -> Result<(u32, u32), CertGenError> {
    let bad = || CertGenError::Owner(text.to_string());
    let (uid, gid) = text.split_once(':').unwrap_or((text, text));
    // u32::MAX is chown's "leave unchanged" (-1): it would silently change nothing.
    let id = |text: &str| text.parse::<u32>().ok().filter(|id| *id != u32::MAX);
    Ok((id(uid).ok_or_else(bad)?, id(gid).ok_or_else(bad)?))
}

/// Whether this process may give files to `owner`: as root, or when it is the process's own
/// uid. Checked before anything is written, so a run without the privilege does not replace
/// working keys and then fail.
pub fn may_give_to((uid, gid): (u32, u32)) -> Result<(), CertGenError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 || euid == uid {
        return Ok(());
    }
    Err(CertGenError::OwnerNeedsRoot { uid, gid })
}

/// Gives the files [`generate`] wrote to `owner` (uid, gid).
pub fn give_to(paths: &[PathBuf], (uid, gid): (u32, u32)) -> Result<(), CertGenError> {
    for path in paths {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| {
            CertGenError::Chown {
                path: path.clone(),
                uid,
                gid,
                source,
            }
        })?;
    }
    Ok(())
}

/// How long generated TLS certificates are valid.
pub(crate) const CERT_DAYS: i64 = 365;

/// Writes a self-signed TLS certificate for `hosts` (plus 127.0.0.1 and ::1) and an
/// ES256 token-signing key pair into `dir`. Returns the paths written.
pub fn generate(dir: &Path, hosts: &[String]) -> Result<Vec<PathBuf>, CertGenError> {
    if hosts.is_empty() {
        return Err(CertGenError::NoHosts);
    }
    fs::create_dir_all(dir).map_err(|source| CertGenError::Io {
        path: dir.to_path_buf(),
        source,
    })?;

    let mut tls = CertificateParams::new(hosts.to_vec())?;
    for ip in ["127.0.0.1", "::1"] {
        let ip = ip.parse().expect("literal IP");
        if !tls.subject_alt_names.contains(&SanType::IpAddress(ip)) {
            tls.subject_alt_names.push(SanType::IpAddress(ip));
        }
    }
    // A year, like public CAs (Mozilla's profile wants at most 366 days): rcgen's default
    // runs to the year 4096.
    let now = time::OffsetDateTime::now_utc();
    tls.not_before = now - time::Duration::hours(1);
    tls.not_after = now + time::Duration::days(CERT_DAYS);
    tls.distinguished_name
        .push(DnType::CommonName, hosts[0].clone());
    tls.distinguished_name
        .push(DnType::OrganizationName, "registry-edge development");
    let tls_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let tls_cert = tls.self_signed(&tls_key)?;

    let mut auth = CertificateParams::new(Vec::<String>::new())?;
    auth.distinguished_name
        .push(DnType::CommonName, "registry-edge token signing");
    auth.is_ca = IsCa::NoCa;
    let auth_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let auth_cert = auth.self_signed(&auth_key)?;

    let files = [
        (TLS_CERT, tls_cert.pem(), false),
        (TLS_KEY, tls_key.serialize_pem(), true),
        (AUTH_CERT, auth_cert.pem(), false),
        (AUTH_KEY, auth_key.serialize_pem(), true),
    ];
    files
        .iter()
        .map(|(name, pem, secret)| {
            let path = dir.join(name);
            write_file(&path, pem.as_bytes(), *secret).map_err(|source| CertGenError::Io {
                path: path.clone(),
                source,
            })?;
            Ok(path)
        })
        .collect()
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    // An existing file keeps its old mode on open: tighten it explicitly.
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
