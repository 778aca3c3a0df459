//! Helpers for configuring the registry behind the edge: the `auth.token` block of its
//! `config.yml`, and htpasswd lines for the edge's users.

use crate::config::Config;

/// The registry's `auth:` block matching the edge's token settings; `None` without `auth`.
///
/// The registry trusts one `rootcertbundle` file: with trusted issuers it must hold the edge's
/// certificate (if it issues tokens) and every trusted issuer's, and the block says so,
/// naming each file. In verify-only mode the realm is the (first) trusted issuer's.
pub fn auth_block(config: &Config) -> Option<String> {
    let (realm, service, issuer, own_bundle) = match (&config.auth, config.trusted_issuers.first())
    {
        (Some(auth), _) => (
            format!("https://{}{}", public_host(config)?, auth.realm_path),
            auth.service.as_str(),
            auth.issuer.as_str(),
            Some(&auth.certificate),
        ),
        (None, Some(first)) => (
            first.realm.clone(),
            first.service.as_str(),
            first.issuer.as_str(),
            None,
        ),
        (None, None) => return None,
    };
    let mut bundles: Vec<String> = own_bundle
        .into_iter()
        .chain(config.trusted_issuers.iter().map(|t| &t.certificates))
        .map(|path| {
            std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string()
        })
        .collect();
    bundles.dedup();
    let mut block = format!(
        "# Paste into the registry's config.yml (service and issuer must match the edge).\n\
         auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    \
         rootcertbundle: {}\n",
        bundles[0]
    );
    if bundles.len() > 1 {
        block.push_str(
            "# The rootcertbundle file must hold every one of these certificates (concatenate \
             them into one PEM file and name that file above):\n",
        );
        for bundle in &bundles {
            block.push_str(&format!("#   {bundle}\n"));
        }
    }
    Some(block)
}

/// Why `registry-config --route` has no block to print.
#[derive(Debug, thiserror::Error)]
pub enum RouteBlockError {
    #[error("no route {name:?} (routes: {known})")]
    NoRoute { name: String, known: String },
    #[error(
        "no auth.token: the edge signs tokens for a route's pool only with its own realm; \
         without it requests reach the pool with the client's Authorization"
    )]
    NoRealm,
    #[error("no public host: set server.external_url or an https listener")]
    NoHost,
}

/// The `auth:` block for the pool of route `name`: the edge sends that pool a short-lived
/// token it signs (same key, issuer and service as its realm) for the pool's own names.
pub fn route_auth_block(config: &Config, name: &str) -> Result<String, RouteBlockError> {
    let Some(route) = config.routes.iter().find(|r| r.name == name) else {
        let known: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        return Err(RouteBlockError::NoRoute {
            name: name.to_string(),
            known: match known.is_empty() {
                true => "none".to_string(),
                false => known.join(", "),
            },
        });
    };
    let auth = config.auth.as_ref().ok_or(RouteBlockError::NoRealm)?;
    let realm = format!(
        "https://{}{}",
        public_host(config).ok_or(RouteBlockError::NoHost)?,
        auth.realm_path
    );
    let bundle = std::fs::canonicalize(&auth.certificate)
        .unwrap_or_else(|_| auth.certificate.clone())
        .display()
        .to_string();
    Ok(format!(
        "# Paste into the config.yml of route {:?}'s registry (nodes {}): the edge sends it \
         tokens it signs
# for the names that registry knows (without {:?}).
\
         auth:
  token:
    realm: {realm}
    service: {}
    issuer: {}
    \
         rootcertbundle: {bundle}
",
        route.name,
        route
            .pool
            .nodes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        route.edge_prefix,
        auth.service,
        auth.issuer,
    ))
}

/// The host (and port) clients reach the edge at: `server.external_url`, else the first
/// https listener.
fn public_host(config: &Config) -> Option<String> {
    if let Some(external) = &config.server.external_url {
        return Some(external.authority.clone());
    }
    let addr = config.server.https_listen.first()?;
    let ip = if addr.ip().is_unspecified() {
        "localhost".to_string()
    } else {
        addr.ip().to_string()
    };
    Some(match addr.port() {
        443 => ip,
        port => format!("{ip}:{port}"),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the user name must be non-empty and contain no ':'")]
    User,
    #[error("the password is empty")]
    EmptyPassword,
    /// A cost `check` would refuse in the file (`htpasswd::BCRYPT_COSTS`).
    #[error(transparent)]
    Cost(#[from] crate::auth::users::htpasswd::CostError),
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
    crate::auth::users::htpasswd::check_cost(cost)?;
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
        for cost in [3, 18, 31] {
            let refused = htpasswd_line("a", "pw", cost).unwrap_err().to_string();
            assert!(
                refused.contains(&format!("cost {cost} is outside 4..=17")),
                "{refused}"
            );
        }
    }
}
