//! The ACME state directory (`tls.acme.state_dir`): the account credentials and the
//! certificate chain with its key. Secrets are written mode 0600, every file through a
//! temporary file and a rename, so a crash never leaves half a key behind.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use instant_acme::AccountCredentials;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

const ACCOUNT_FILE: &str = "account.json";
const CERT_FILE: &str = "certificate.pem";
const KEY_FILE: &str = "certificate.key";

#[derive(Debug, thiserror::Error)]
pub enum AcmeStoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

/// The account file: credentials with the directory they belong to.
#[derive(Serialize, Deserialize)]
struct AccountFile {
    directory: String,
    credentials: AccountCredentials,
}

/// A certificate read back from the state directory.
pub(super) struct StoredCertificate {
    pub chain_pem: String,
    pub key_pem: String,
    /// DNS names of the leaf, lowercased.
    pub names: Vec<String>,
    /// The leaf's `notAfter`, Unix seconds.
    pub not_after: i64,
}

pub(super) struct Store {
    dir: PathBuf,
}

impl Store {
    /// Creates the directory (mode 0700) when it does not exist.
    pub(super) fn open(dir: &Path) -> Result<Store, AcmeStoreError> {
        let io = |source| AcmeStoreError::Io {
            path: dir.to_path_buf(),
            source,
        };
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(io)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The saved credentials, when they were created with `directory`.
    pub(super) fn account(
        &self,
        directory: &str,
    ) -> Result<Option<AccountCredentials>, AcmeStoreError> {
        let path = self.dir.join(ACCOUNT_FILE);
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        let file: AccountFile =
            serde_json::from_str(&text).map_err(|e| AcmeStoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        Ok((file.directory == directory).then_some(file.credentials))
    }

    pub(super) fn save_account(
        &self,
        directory: &str,
        credentials: AccountCredentials,
    ) -> Result<(), AcmeStoreError> {
        let path = self.dir.join(ACCOUNT_FILE);
        let file = AccountFile {
            directory: directory.to_string(),
            credentials,
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| AcmeStoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&path, text.as_bytes(), 0o600)
    }

    /// The saved certificate, if there is one.
    pub(super) fn certificate(&self) -> Result<Option<StoredCertificate>, AcmeStoreError> {
        let cert_path = self.dir.join(CERT_FILE);
        let key_path = self.dir.join(KEY_FILE);
        let (Some(chain_pem), Some(key_pem)) =
            (read_optional(&cert_path)?, read_optional(&key_path)?)
        else {
            return Ok(None);
        };
        let corrupt = |reason: String| AcmeStoreError::Corrupt {
            path: cert_path.clone(),
            reason,
        };
        let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .next()
            .ok_or_else(|| corrupt("no CERTIFICATE block".into()))?
            .map_err(|e| corrupt(format!("{e:?}")))?;
        let not_after =
            crate::tls::not_after(&leaf).ok_or_else(|| corrupt("unreadable certificate".into()))?;
        Ok(Some(StoredCertificate {
            names: crate::tls::certificate_names(&leaf),
            chain_pem,
            key_pem,
            not_after,
        }))
    }

    /// Saves a new certificate: the key first, so a crash between the two renames leaves
    /// a mismatched pair (refused on load, and ordered again) rather than a lost key.
    pub(super) fn save_certificate(
        &self,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<(), AcmeStoreError> {
        write_atomically(&self.dir.join(KEY_FILE), key_pem.as_bytes(), 0o600)?;
        write_atomically(&self.dir.join(CERT_FILE), chain_pem.as_bytes(), 0o644)
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, AcmeStoreError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AcmeStoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AcmeStoreError> {
    let tmp = path.with_extension("tmp");
    let io = |source| AcmeStoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A leftover temporary file from a crash may have another mode: start afresh.
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn certificate_round_trip_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("acme");
        let store = Store::open(&state).unwrap();
        assert_eq!(fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        assert!(store.certificate().unwrap().is_none());

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["Registry.Test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        store
            .save_certificate(&cert.pem(), &key.serialize_pem())
            .unwrap();
        let key_mode = fs::metadata(state.join(KEY_FILE)).unwrap().mode() & 0o777;
        assert_eq!(key_mode, 0o600);
        let stored = store.certificate().unwrap().expect("saved");
        assert_eq!(stored.names, vec!["registry.test"]);
        assert_eq!(stored.key_pem, key.serialize_pem());
        assert!(stored.not_after > 0);
    }

    #[test]
    fn account_is_kept_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.account("https://ca.test/dir").unwrap().is_none());
        let credentials: AccountCredentials = serde_json::from_value(serde_json::json!({
            "id": "https://ca.test/acct/1",
            "key_pkcs8": "AAAA",
            "directory": "https://ca.test/dir",
        }))
        .unwrap();
        store
            .save_account("https://ca.test/dir", credentials)
            .unwrap();
        let mode = fs::metadata(dir.path().join(ACCOUNT_FILE)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(store.account("https://ca.test/dir").unwrap().is_some());
        assert!(store.account("https://other.test/dir").unwrap().is_none());
    }
}
