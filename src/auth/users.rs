//! Users from an htpasswd file (bcrypt entries, as `htpasswd -B` writes them).
//!
//! bcrypt runs on the blocking pool, never on the reactor. A correct login is cached
//! for a configured time (`auth.users.cache_ttl`) under an HMAC of user and password
//! with a per-process random key, so a client's repeated token requests don't each pay bcrypt, and the cache holds
//! nothing a memory dump could turn back into a password.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ring::hmac;

/// Most cached logins kept; past it, expired entries go, then everything.
const CACHE_CAPACITY: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {problem}", path.display())]
    Entry {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// The user database and its login cache.
pub struct Users {
    hashes: HashMap<String, String>,
    cache_key: hmac::Key,
    cache: Mutex<HashMap<Vec<u8>, Instant>>,
    /// Zero disables the cache.
    cache_ttl: Duration,
    /// A valid hash to verify against for unknown users, so timing does not tell them apart.
    /// Made on first use, at `decoy_cost`: a load or reload pays no bcrypt work.
    decoy: OnceLock<String>,
    /// The cost of one of the file's entries (or bcrypt's default).
    decoy_cost: u32,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("count", &self.hashes.len())
            .finish()
    }
}

impl Users {
    pub fn load(path: &Path, cache_ttl: Duration) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Users::parse(path, &text, cache_ttl)
    }

    pub fn parse(path: &Path, text: &str, cache_ttl: Duration) -> Result<Users, UsersError> {
        let mut hashes = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry_err = |problem: &str| UsersError::Entry {
                path: path.to_path_buf(),
                line: index + 1,
                problem: problem.into(),
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| entry_err("expected user:bcrypt-hash"))?;
            if user.is_empty() {
                return Err(entry_err("empty user name"));
            }
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                return Err(entry_err("only bcrypt entries are supported (htpasswd -B)"));
            }
            check_bcrypt(hash).map_err(|problem| entry_err(&problem))?;
            hashes.insert(user.to_string(), hash.to_string());
        }
        let rng = ring::rand::SystemRandom::new();
        let cache_key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("system randomness");
        let decoy_cost = hashes
            .values()
            .next()
            .and_then(|h| h.get(4..6))
            .and_then(|c| c.parse().ok())
            .unwrap_or(bcrypt::DEFAULT_COST);
        Ok(Users {
            hashes,
            cache_key,
            cache: Mutex::new(HashMap::new()),
            cache_ttl,
            decoy: OnceLock::new(),
            decoy_cost,
        })
    }

    /// The decoy hash (bcrypt work on first call; run it on the blocking pool).
    fn decoy(&self) -> &str {
        // Costs were checked at load, so this cannot fail; an empty decoy only loses the
        // timing cover for unknown users, never lets one in.
        self.decoy.get_or_init(|| {
            bcrypt::hash("registry-edge decoy", self.decoy_cost).unwrap_or_default()
        })
    }

    pub fn contains(&self, user: &str) -> bool {
        self.hashes.contains_key(user)
    }

    fn cache_tag(&self, user: &str, password: &str) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.cache_key);
        ctx.update(user.as_bytes());
        ctx.update(&[0]);
        ctx.update(password.as_bytes());
        ctx.sign().as_ref().to_vec()
    }

    /// Whether `password` is `user`'s; `cached` tells whether bcrypt was skipped.
    pub async fn verify(self: &Arc<Self>, user: &str, password: &str) -> Verified {
        let tag = self.cache_tag(user, password);
        let now = Instant::now();
        if let Some(expires) = self.cache.lock().expect("cache lock").get(&tag) {
            if *expires > now && self.contains(user) {
                return Verified {
                    ok: true,
                    cached: true,
                };
            }
        }
        let users = self.clone();
        let (user_owned, password_owned) = (user.to_string(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || {
            let (hash, known) = match users.hashes.get(&user_owned) {
                Some(hash) => (hash.as_str(), true),
                None => (users.decoy(), false),
            };
            bcrypt::verify(&password_owned, hash).unwrap_or(false) && known
        })
        .await
        .unwrap_or(false);
        if ok && !self.cache_ttl.is_zero() {
            let mut cache = self.cache.lock().expect("cache lock");
            if cache.len() >= CACHE_CAPACITY {
                cache.retain(|_, expires| *expires > now);
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(tag, now + self.cache_ttl);
        }
        Verified { ok, cached: false }
    }
}

/// bcrypt costs accepted: Apache's `htpasswd -B -C` allows 4 to 17. The bcrypt crate
/// refuses costs outside 4..=31 only when verifying (a failed login for every user), and a
/// cost near 31 would hold a blocking thread for hours per login.
pub const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=17;

/// Checks a bcrypt hash's shape (60 characters, `$2y$NN$` + salt and hash in bcrypt's
/// base64) and cost, so a bad entry is refused when the file is loaded, naming its line.
fn check_bcrypt(hash: &str) -> Result<(), String> {
    let parts: bcrypt::HashParts = hash
        .parse()
        .map_err(|e| format!("not a valid bcrypt hash: {e}"))?;
    let cost = parts.get_cost();
    if !BCRYPT_COSTS.contains(&cost) {
        return Err(format!(
            "bcrypt cost {cost} is outside {}..={} (htpasswd -B -C allows the same)",
            BCRYPT_COSTS.start(),
            BCRYPT_COSTS.end()
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub ok: bool,
    pub cached: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Arc<Users> {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        Arc::new(
            Users::parse(
                Path::new("htpasswd"),
                &format!("# comment\nalice:{hash}\n\n"),
                Duration::from_secs(60),
            )
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn zero_ttl_disables_the_cache() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = Arc::new(
            Users::parse(Path::new("h"), &format!("alice:{hash}\n"), Duration::ZERO).unwrap(),
        );
        for _ in 0..2 {
            let expected = Verified {
                ok: true,
                cached: false,
            };
            assert_eq!(users.verify("alice", "s3cret").await, expected);
        }
    }

    #[tokio::test]
    async fn verifies_and_caches_only_correct_logins() {
        let users = users();
        // (user, password, ok, cached): in order, since the cache fills as it goes.
        let cases = [
            ("alice", "s3cret", true, false),
            ("alice", "s3cret", true, true),
            ("alice", "wrong", false, false),
            ("alice", "wrong", false, false),
            ("nobody", "s3cret", false, false),
        ];
        for (user, password, ok, cached) in cases {
            assert_eq!(
                users.verify(user, password).await,
                Verified { ok, cached },
                "{user}/{password}"
            );
        }
    }

    #[test]
    fn rejects_non_bcrypt_entries_naming_the_line() {
        let err = Users::parse(
            Path::new("pw"),
            "ok:$2y$04$abcdefghijklmnopqrstuu5VnfT0mVZcRo7tTzd6fQ7Ex9Hc7d8S.\nbob:{SHA}abc\n",
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("pw:2:"), "{err}");
        assert!(Users::parse(Path::new("pw"), "no-colon\n", Duration::ZERO).is_err());
    }

    #[test]
    fn refuses_bad_costs_and_malformed_hashes_naming_the_line() {
        let good = bcrypt::hash("pw", 4).unwrap();
        let with_cost = |cost: &str| format!("{}{cost}{}", &good[..4], &good[6..]);
        let cases = [
            (with_cost("03"), "cost 3"),
            (with_cost("32"), "cost 32"),
            (with_cost("31"), "cost 31"),
            (with_cost("xx"), "not a valid bcrypt hash"),
            (good[..40].to_string(), "not a valid bcrypt hash"),
            (
                format!("{}!!{}", &good[..7], &good[9..]),
                "not a valid bcrypt hash",
            ),
            (format!("{good}é"), "not a valid bcrypt hash"),
        ];
        for (hash, expected) in cases {
            let text = format!("alice:{good}\nbob:{hash}\n");
            let err = Users::parse(Path::new("pw"), &text, Duration::ZERO).unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with("pw:2:"), "{hash}: {message}");
            assert!(message.contains(expected), "{hash}: {message}");
        }
        let cost17 = with_cost("17");
        assert!(Users::parse(Path::new("pw"), &format!("a:{cost17}\n"), Duration::ZERO).is_ok());
    }
}
