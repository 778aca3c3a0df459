//! Helpers for configuring the registry behind the edge: the `auth.token` block of its
//! `config.yml`, and htpasswd lines for the edge's users.

use crate::config::Config;

/// The registry's `auth:` block matching the edge's token settings; `None` without `auth`.
pub fn auth_block(config: &Config) -> Option<String> {
    let auth = config.auth.as_ref()?;
    let host = match &config.server.external_url {
        Some(external) => external.authority.clone(),
        None => {
            let addr = config.server.https_listen.first()?;
            let ip = if addr.ip().is_unspecified() {
                "localhost".to_string()
            } else {
                addr.ip().to_string()
            };
            if addr.port() == 443 {
                ip
            } else {
                format!("{ip}:{}", addr.port())
            }
        }
    };
    let bundle =
        std::fs::canonicalize(&auth.certificate).unwrap_or_else(|_| auth.certificate.clone());
    Some(format!(
        "# Paste into the registry's config.yml (service and issuer must match the edge).\n\
         auth:\n  token:\n    realm: https://{host}{}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
        auth.realm_path,
        auth.service,
        auth.issuer,
        bundle.display()
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the user name must be non-empty and contain no ':'")]
    User,
    #[error("the password is empty")]
    EmptyPassword,
    #[error("bcrypt: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
}

/// `user:$2y$…` as `htpasswd -B` writes it.
pub fn htpasswd_line(user: &str, password: &str, cost: u32) -> Result<String, HashError> {
    if user.is_empty() || user.contains(':') || user.contains(char::is_whitespace) {
        return Err(HashError::User);
    }
    if password.is_empty() {
        return Err(HashError::EmptyPassword);
    }
    let hash = bcrypt::hash_with_result(password, cost)?.format_for_version(bcrypt::Version::TwoY);
    Ok(format!("{user}:{hash}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_lines_verify() {
        let line = htpasswd_line("alice", "pw", 4).unwrap();
        let (user, hash) = line.split_once(':').unwrap();
        assert_eq!(user, "alice");
        assert!(hash.starts_with("$2y$04$"));
        assert!(bcrypt::verify("pw", hash).unwrap());
        assert!(htpasswd_line("a:b", "pw", 4).is_err());
        assert!(htpasswd_line("a", "", 4).is_err());
    }
}
