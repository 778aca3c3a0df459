//! OpenID Connect ID tokens as passwords (`auth.users.oidc[]`): CI jobs log in with the
//! short-lived token their platform gives them (GitHub Actions, GitLab CI `id_tokens`,
//! Kubernetes service-account tokens).
//!
//! Keys come from the provider's JWKS, found through OpenID Connect Discovery 1.0 §4
//! (`<issuer>/.well-known/openid-configuration`, whose `issuer` must equal the configured
//! one, §4.3). They are cached and fetched again only for an unknown `kid`, at most once per
//! [`REFETCH_INTERVAL`], so forged `kid`s cannot make the edge hammer the provider. Only
//! RS256, ES256 and PS256 are accepted (`alg: none` and HS* never: an HS256 token "signed"
//! with the public key is the classic confusion attack); `iss`, `aud` and `exp` are
//! required, `nbf` and `iat` checked when present, all with [`LEEWAY`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::trust::{http_client, read_limited, TrustError};
use crate::auth::identity::{Backend, Identity};
use crate::auth::token::claims::LEEWAY;
use crate::config::OidcSettings;

/// Shortest time between two key fetches for one issuer.
pub(crate) const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Limit for one discovery or JWKS request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest discovery document or JWKS read, in bytes.
const MAX_DOCUMENT: usize = 1024 * 1024;
const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::PS256];

/// What the provider's keys said about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OidcAnswer {
    Correct(Identity),
    /// Refused; the reason is for the log (never the token).
    Wrong(String),
    /// The provider's keys could not be fetched.
    Unavailable(String),
}

struct Key {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one.
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
    /// Why the last fetch failed, while no later one succeeded.
    last_error: Option<String>,
}

/// What only the task fetching keys touches.
#[derive(Default)]
struct Fetcher {
    jwks_uri: Option<String>,
    last_fetch: Option<Instant>,
}

/// One OpenID provider and its cached keys.
pub(crate) struct OidcProvider {
    settings: OidcSettings,
    client: reqwest::Client,
    /// Read by every login; written only after a fetch, never held across one.
    keys: std::sync::RwLock<KeySet>,
    /// One fetch at a time; logins whose key is known never wait for it.
    fetcher: tokio::sync::Mutex<Fetcher>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("issuer", &self.settings.issuer)
            .finish()
    }
}

/// The `iss` of a JWT, read without verifying anything: it only picks which provider
/// verifies the token. `None` when `token` is not a JWT.
pub(crate) fn unverified_issuer(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_string)
}

impl OidcProvider {
    /// Reads the trust roots; contacts nothing.
    pub(crate) fn load(settings: &OidcSettings) -> Result<OidcProvider, TrustError> {
        super::super::token::jwt_crypto::install();
        Ok(OidcProvider {
            settings: settings.clone(),
            client: http_client(settings.ca.as_deref(), FETCH_TIMEOUT)?,
            keys: std::sync::RwLock::new(KeySet::default()),
            fetcher: tokio::sync::Mutex::new(Fetcher::default()),
        })
    }

    pub(crate) fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    pub(crate) fn username(&self) -> &str {
        &self.settings.username
    }

    /// Verifies an ID token and turns its claims into an identity.
    pub(crate) async fn verify(&self, token: &str) -> OidcAnswer {
        let header = match jsonwebtoken::decode_header(token) {
            Ok(header) => header,
            Err(_) => return OidcAnswer::Wrong("not a JWT".into()),
        };
        if !ALGORITHMS.contains(&header.alg) {
            return OidcAnswer::Wrong(format!("algorithm {:?} is not accepted", header.alg));
        }
        let key = match self.key_for(header.kid.as_deref(), header.alg).await {
            Ok(Some(key)) => key,
            Ok(None) => {
                return OidcAnswer::Wrong("signed with a key the issuer does not publish".into())
            }
            Err(problem) => return OidcAnswer::Unavailable(problem),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation) {
            Ok(data) => data.claims,
            Err(e) => return OidcAnswer::Wrong(format!("token refused: {e}")),
        };
        self.identity(&claims)
    }

    fn identity(&self, claims: &Map<String, Value>) -> OidcAnswer {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if let Some(iat) = claims.get("iat") {
            match iat.as_u64() {
                Some(iat) if iat <= now + LEEWAY => {}
                _ => return OidcAnswer::Wrong("iat is in the future or not a time".into()),
            }
        }
        let account = match claims
            .get(&self.settings.account_claim)
            .and_then(Value::as_str)
        {
            Some(account) if !account.is_empty() => account,
            _ => {
                return OidcAnswer::Wrong(format!(
                    "claim {:?} (account_claim) is missing or not a string",
                    self.settings.account_claim
                ))
            }
        };
        let groups = match self.settings.groups_claim.as_ref().map(|c| claims.get(c)) {
            None | Some(None) => Vec::new(),
            Some(Some(Value::String(group))) => vec![group.clone()],
            Some(Some(Value::Array(list))) => list
                .iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect(),
            Some(Some(_)) => {
                return OidcAnswer::Wrong("groups claim is not a list of strings".into())
            }
        };
        let strings: BTreeMap<String, String> = claims
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.to_string())))
            .collect();
        let backend = Backend::Oidc {
            issuer: self.settings.issuer.clone(),
        };
        let mut identity = Identity::new(account, backend).with_groups(groups);
        identity.claims = strings;
        // Accepted up to LEEWAY past `exp` (clock skew), so usable as long.
        identity.not_after = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map(|exp| exp.saturating_add(LEEWAY));
        OidcAnswer::Correct(identity)
    }

    /// The published key a token names, fetching the keys again when it is unknown (at
    /// most once per [`REFETCH_INTERVAL`]). `Err` when no keys could be fetched.
    async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Option<DecodingKey>, String> {
        let known = |keys: &std::sync::RwLock<KeySet>| {
            let set = keys.read().unwrap_or_else(|e| e.into_inner());
            (find(&set.keys, kid, alg), set.last_error.clone())
        };
        if let (Some(key), _) = known(&self.keys) {
            return Ok(Some(key));
        }
        let mut fetcher = self.fetcher.lock().await;
        let recent = fetcher
            .last_fetch
            .is_some_and(|at| at.elapsed() < REFETCH_INTERVAL);
        if !recent {
            fetcher.last_fetch = Some(Instant::now());
            let fetched = self.fetch(&mut fetcher).await;
            let mut set = self.keys.write().unwrap_or_else(|e| e.into_inner());
            match fetched {
                Ok(keys) => {
                    *set = KeySet {
                        keys,
                        last_error: None,
                    }
                }
                Err(problem) => {
                    tracing::warn!(issuer = %self.settings.issuer, %problem, "OIDC keys could not be fetched");
                    set.last_error = Some(problem);
                }
            }
        }
        drop(fetcher);
        match known(&self.keys) {
            (Some(key), _) => Ok(Some(key)),
            (None, Some(problem)) => Err(problem),
            (None, None) => Ok(None),
        }
    }

    /// Discovery (once) and the JWKS: the keys it publishes for signing.
    async fn fetch(&self, fetcher: &mut Fetcher) -> Result<Vec<Key>, String> {
        let jwks_uri = match &fetcher.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.settings.issuer.trim_end_matches('/')
                );
                let discovery: Map<String, Value> = self.get_json(&url).await?;
                if discovery.get("issuer").and_then(Value::as_str) != Some(&self.settings.issuer) {
                    return Err(format!("{url}: its issuer differs from the configured one"));
                }
                let uri = discovery
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .filter(|u| u.starts_with("https://"))
                    .ok_or_else(|| format!("{url}: no https jwks_uri"))?
                    .to_string();
                fetcher.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let jwks: JwkSet = self.get_json(&jwks_uri).await?;
        Ok(jwks
            .keys
            .iter()
            .filter(|jwk| {
                jwk.common.public_key_use != Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            })
            .filter_map(|jwk| {
                let algorithm = jwk
                    .common
                    .key_algorithm
                    .and_then(|a| a.to_string().parse::<Algorithm>().ok());
                Some(Key {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key: DecodingKey::from_jwk(jwk).ok()?,
                })
            })
            .collect())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {}", crate::report::chain(&e.without_url())))?;
        if !response.status().is_success() {
            return Err(format!("{url}: answered {}", response.status()));
        }
        let body = read_limited(response, MAX_DOCUMENT)
            .await
            .map_err(|problem| format!("{url}: {problem}"))?;
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not the expected JSON: {e}"))
    }
}

/// The key named by `kid` (or, for a token without `kid`, the only key of the right
/// family) whose family and `alg` fit `alg`.
fn find(keys: &[Key], kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    let fits = |k: &&Key| k.key.family() == alg.family() && k.algorithm.is_none_or(|a| a == alg);
    let mut candidates = keys.iter().filter(fits);
    match kid {
        Some(kid) => candidates.find(|k| k.kid.as_deref() == Some(kid)),
        None => {
            let first = candidates.next()?;
            candidates.next().is_none().then_some(first)
        }
    }
    .map(|k| k.key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_is_read_only_from_jwt_shaped_text() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!("{}.{}.sig", b64("{}"), b64(r#"{"iss":"https://ci"}"#));
        assert_eq!(unverified_issuer(&token).as_deref(), Some("https://ci"));
        assert_eq!(unverified_issuer("plain password"), None);
        assert_eq!(unverified_issuer("a.b.c.d"), None);
        let no_iss = format!("{}.{}.sig", b64("{}"), b64(r#"{"sub":"x"}"#));
        assert_eq!(unverified_issuer(&no_iss), None);
    }
}
