//! Users from an htpasswd file (bcrypt entries, as `htpasswd -B` writes them).
//!
//! bcrypt runs on the blocking pool, never on the reactor. Correct logins are cached by
//! `users::cache` in front of every backend, so repeated token requests don't each pay bcrypt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Why an htpasswd file was refused.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
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

/// The users of one htpasswd file.
pub(crate) struct Htpasswd {
    hashes: HashMap<String, String>,
    /// A valid hash to verify against for unknown users, so timing does not tell them apart.
    /// Made on first use, at `decoy_cost`: a load or reload pays no bcrypt work.
    decoy: OnceLock<String>,
    /// The cost of one of the file's entries (or bcrypt's default).
    decoy_cost: u32,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd")
            .field("count", &self.hashes.len())
            .finish()
    }
}

impl Htpasswd {
    pub(crate) fn load(path: &Path) -> Result<Htpasswd, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Htpasswd::parse(path, &text)
    }

    /// Parses `text` read from `path`: one `user:bcrypt-hash` per line, `#` comments and
    /// blank lines skipped. Refuses, naming the line, an entry that is not bcrypt, has a cost
    /// outside [`BCRYPT_COSTS`], or names a user an earlier line named (which of two hashes
    /// is meant cannot be known; Apache's `htpasswd` would use the first, nginx the first
    /// that matches).
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Htpasswd, HtpasswdError> {
        let mut hashes = HashMap::new();
        let mut lines: HashMap<&str, usize> = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry_err = |problem: &str| HtpasswdError::Entry {
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
            if let Some(first) = lines.insert(user, index + 1) {
                return Err(entry_err(&format!(
                    "user {user} is listed twice, on lines {first} and {}",
                    index + 1
                )));
            }
            hashes.insert(user.to_string(), hash.to_string());
        }
        let decoy_cost = hashes
            .values()
            .next()
            .and_then(|h| h.get(4..6))
            .and_then(|c| c.parse().ok())
            .unwrap_or(bcrypt::DEFAULT_COST);
        Ok(Htpasswd {
            hashes,
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

    pub(crate) fn contains(&self, user: &str) -> bool {
        self.hashes.contains_key(user)
    }

    /// Whether `password` is `user`'s. Unknown users are checked against a decoy hash when
    /// `decoy` is set (htpasswd is the last backend), so timing does not tell them apart.
    pub(crate) async fn verify(
        self: &Arc<Self>,
        user: &str,
        password: &str,
        decoy: bool,
    ) -> Verdict {
        if !decoy && !self.contains(user) {
            return Verdict::Unknown;
        }
        let users = self.clone();
        let (user_owned, password_owned) = (user.to_string(), password.to_string());
        tokio::task::spawn_blocking(move || {
            let (hash, known) = match users.hashes.get(&user_owned) {
                Some(hash) => (hash.as_str(), true),
                None => (users.decoy(), false),
            };
            let ok = bcrypt::verify(&password_owned, hash).unwrap_or(false);
            match (known, ok) {
                (true, true) => Verdict::Correct,
                (true, false) => Verdict::Wrong,
                (false, _) => Verdict::Unknown,
            }
        })
        .await
        .unwrap_or(Verdict::Wrong)
    }
}

/// What one backend says about a user and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Correct,
    /// The user exists and the password is not theirs: the chain stops here.
    Wrong,
    /// Not this backend's user: the next backend is asked.
    Unknown,
}

/// bcrypt costs accepted: Apache's `htpasswd -B -C` allows 4 to 17. The bcrypt crate
/// refuses costs outside 4..=31 only when verifying (a failed login for every user), and a
/// cost near 31 would hold a blocking thread for hours per login.
pub(crate) const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=17;

/// Checks a bcrypt hash's shape (60 characters, `$2y$NN$` + salt and hash in bcrypt's
/// base64) and cost, so a bad entry is refused when the file is loaded, naming its line.
fn check_bcrypt(hash: &str) -> Result<(), String> {
    let parts: bcrypt::HashParts = hash
        .parse()
        .map_err(|e| format!("not a valid bcrypt hash: {e}"))?;
    check_cost(parts.get_cost()).map_err(|e| e.to_string())
}

/// A bcrypt cost outside [`BCRYPT_COSTS`] (the same message for a file's entry and for
/// `hash-password --cost`).
#[derive(Debug, thiserror::Error)]
#[error(
    "bcrypt cost {cost} is outside {}..={} (htpasswd -B -C allows the same)",
    BCRYPT_COSTS.start(),
    BCRYPT_COSTS.end()
)]
pub struct CostError {
    pub cost: u32,
}

/// Whether `cost` is one of [`BCRYPT_COSTS`].
pub fn check_cost(cost: u32) -> Result<(), CostError> {
    if !BCRYPT_COSTS.contains(&cost) {
        return Err(CostError { cost });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verdicts_for_known_and_unknown_users() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let text = format!("# comment\nalice:{hash}\n\n");
        let users = Arc::new(Htpasswd::parse(Path::new("htpasswd"), &text).unwrap());
        // (user, password, decoy, verdict)
        let cases = [
            ("alice", "s3cret", false, Verdict::Correct),
            ("alice", "wrong", false, Verdict::Wrong),
            ("alice", "", true, Verdict::Wrong),
            ("nobody", "s3cret", false, Verdict::Unknown),
            ("nobody", "s3cret", true, Verdict::Unknown),
        ];
        for (user, password, decoy, verdict) in cases {
            assert_eq!(
                users.verify(user, password, decoy).await,
                verdict,
                "{user}/{password}/{decoy}"
            );
        }
    }

    #[test]
    fn rejects_non_bcrypt_entries_naming_the_line() {
        let err = Htpasswd::parse(
            Path::new("pw"),
            "ok:$2y$04$abcdefghijklmnopqrstuu5VnfT0mVZcRo7tTzd6fQ7Ex9Hc7d8S.\nbob:{SHA}abc\n",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("pw:2:"), "{err}");
        assert!(Htpasswd::parse(Path::new("pw"), "no-colon\n").is_err());
    }

    #[test]
    fn a_user_listed_twice_is_refused_naming_both_lines() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let text = format!("alice:{hash}\n# bob\nbob:{hash}\nalice:{hash}\n");
        let refused = Htpasswd::parse(Path::new("users"), &text)
            .unwrap_err()
            .to_string();
        assert_eq!(
            refused,
            "users:4: user alice is listed twice, on lines 1 and 4"
        );
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
            let err = Htpasswd::parse(Path::new("pw"), &text).unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with("pw:2:"), "{hash}: {message}");
            assert!(message.contains(expected), "{hash}: {message}");
        }
        let cost17 = with_cost("17");
        assert!(Htpasswd::parse(Path::new("pw"), &format!("a:{cost17}\n")).is_ok());
    }
}
