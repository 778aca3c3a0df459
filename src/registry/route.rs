//! Classifies a request (method + path) into a registry endpoint, the repository it
//! names and the [`Action`] it takes.
//!
//! Parsed once per request; later phases (read-only mode, upstream choice, auth, limits,
//! metrics) match on the result instead of re-reading the method or the path. Repository
//! names may have any number of segments, so the endpoint is found from the END of the
//! path, as distribution's router does (the name is the longest prefix that leaves a valid
//! endpoint).

use http::Method;

/// What a registry request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/` — API version check.
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/blobs/<digest>`
    Blob { digest: String },
    /// `/v2/<name>/blobs/uploads/` — start an upload.
    UploadStart,
    /// `/v2/<name>/blobs/uploads/<uuid>` — an upload session.
    UploadSession { uuid: String },
    /// `/v2/<name>/manifests/<reference>`
    Manifest { reference: String },
    /// `/v2/<name>/tags/list`
    TagsList,
    /// `/v2/<name>/referrers/<digest>`
    Referrers { digest: String },
    /// An unknown path under `/v2/`.
    Other,
    /// Not a registry API path (not `/v2` or `/v2/…`): the edge routes nothing there.
    Outside,
}

/// What a request does to the registry, from its method (and, for a push start, its
/// endpoint). The one answer read-only mode, the push limiter, the token check and the
/// metrics' route class all use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `GET`, `HEAD`: a pull.
    Read,
    /// `POST`, `PUT`, `PATCH` that is not a push start (upload chunks, a blob's closing `PUT`).
    Write,
    /// `POST …/blobs/uploads/` (mounts included) or `PUT …/manifests/<reference>`: what
    /// `rate_limits.push` counts.
    PushStart,
    /// `DELETE`.
    Delete,
    /// Any other method (`OPTIONS`, `TRACE`, extensions): distribution asks for every action.
    Other,
}

impl Action {
    /// The action `method` takes on `endpoint`.
    pub(crate) fn of(method: &Method, endpoint: &Endpoint) -> Action {
        match (method, endpoint) {
            (&Method::GET | &Method::HEAD, _) => Action::Read,
            (&Method::POST, Endpoint::UploadStart) | (&Method::PUT, Endpoint::Manifest { .. }) => {
                Action::PushStart
            }
            (&Method::POST | &Method::PUT | &Method::PATCH, _) => Action::Write,
            (&Method::DELETE, _) => Action::Delete,
            _ => Action::Other,
        }
    }

    /// Whether it changes what the registry holds (refused in read-only mode).
    pub(crate) fn changes_registry(self) -> bool {
        matches!(self, Action::Write | Action::PushStart | Action::Delete)
    }

    /// The token actions distribution's `App.authorized` asks for (`registry-auth.md` §2).
    pub(crate) fn token_actions(self) -> &'static [&'static str] {
        match self {
            Action::Read => &["pull"],
            Action::Write | Action::PushStart => &["pull", "push"],
            Action::Delete => &["delete"],
            Action::Other => &["pull", "push", "delete"],
        }
    }
}

/// A classified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub endpoint: Endpoint,
    /// The repository name, for endpoints under `/v2/<name>/`; kept even when it breaks the
    /// name grammar, so the edge can refuse it with `NAME_INVALID`.
    pub repository: Option<String>,
    pub action: Action,
}

impl Route {
    /// Classifies `method` on `path`, the path part of a request target (already
    /// percent-decoded, query removed).
    pub fn parse(method: &Method, path: &str) -> Route {
        let (endpoint, repository) = endpoint_of(path);
        Route {
            action: Action::of(method, &endpoint),
            endpoint,
            repository,
        }
    }

    /// A request outside the registry API, before anything is known about it.
    pub(crate) fn outside() -> Route {
        Route {
            endpoint: Endpoint::Outside,
            repository: None,
            action: Action::Other,
        }
    }

    /// The repository and the content reference of a blob, or of a manifest (a tag or a
    /// digest): what the cache keys on and what a DELETE removes.
    pub(crate) fn content(&self) -> Option<(&str, &str)> {
        let reference = match &self.endpoint {
            Endpoint::Blob { digest } => digest,
            Endpoint::Manifest { reference } => reference,
            _ => return None,
        };
        Some((self.repository.as_deref()?, reference.as_str()))
    }

    /// Whether the request is under the registry API (`/v2` or `/v2/…`).
    pub(crate) fn is_api(&self) -> bool {
        self.endpoint != Endpoint::Outside
    }

    /// Whether it changes what the registry holds: an API request whose action writes or
    /// deletes.
    pub(crate) fn changes_registry(&self) -> bool {
        self.is_api() && self.action.changes_registry()
    }
}

/// The endpoint and repository `path` addresses.
fn endpoint_of(path: &str) -> (Endpoint, Option<String>) {
    let Some(rest) = path.strip_prefix("/v2/") else {
        let endpoint = if path == "/v2" {
            Endpoint::Base
        } else {
            Endpoint::Outside
        };
        return (endpoint, None);
    };
    match rest {
        "" => return (Endpoint::Base, None),
        "_catalog" => return (Endpoint::Catalog, None),
        _ => {}
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return with_name(name, Endpoint::UploadStart);
    }
    let Some((prefix, last)) = rest.rsplit_once('/') else {
        return (Endpoint::Other, None);
    };
    let Some((name, keyword)) = prefix.rsplit_once('/') else {
        return (Endpoint::Other, None);
    };
    let last = last.to_string();
    let endpoint = match keyword {
        "blobs" => Endpoint::Blob { digest: last },
        "manifests" => Endpoint::Manifest { reference: last },
        "referrers" => Endpoint::Referrers { digest: last },
        "tags" if last == "list" => Endpoint::TagsList,
        "uploads" => match name.strip_suffix("/blobs") {
            Some(name) => return with_name(name, Endpoint::UploadSession { uuid: last }),
            None => return (Endpoint::Other, None),
        },
        _ => return (Endpoint::Other, None),
    };
    with_name(name, endpoint)
}

/// An empty name is no repository; any other name is kept, valid or not, so the caller can
/// refuse it with NAME_INVALID instead of passing it on as "unknown".
fn with_name(name: &str, endpoint: Endpoint) -> (Endpoint, Option<String>) {
    if name.is_empty() {
        return (Endpoint::Other, None);
    }
    (endpoint, Some(name.to_string()))
}

/// Whether `path` is under the registry API (`/v2` or `/v2/…`).
pub fn is_api_path(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

/// The path as the registry will see it: percent-decoded, as Go's router does. `None` when
/// decoding would hide a path separator (`%2F`) or does not give UTF-8 — such a path could
/// make the registry route differently from the edge (a push the limiter never counts).
pub fn decoded_path(raw: &str) -> Option<String> {
    if raw.contains("%2F") || raw.contains("%2f") {
        return None;
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|p| p.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> Option<String> {
        Route::parse(&Method::GET, path).repository
    }

    #[test]
    fn endpoints_and_names() {
        let cases: &[(&str, Endpoint, Option<&str>)] = &[
            ("/v2/", Endpoint::Base, None),
            ("/v2", Endpoint::Base, None),
            ("/v2/_catalog", Endpoint::Catalog, None),
            (
                "/v2/a/b/c/blobs/uploads/",
                Endpoint::UploadStart,
                Some("a/b/c"),
            ),
            (
                "/v2/lib/app/blobs/uploads/1234-uuid",
                Endpoint::UploadSession {
                    uuid: "1234-uuid".into(),
                },
                Some("lib/app"),
            ),
            (
                "/v2/app/blobs/sha256:ab",
                Endpoint::Blob {
                    digest: "sha256:ab".into(),
                },
                Some("app"),
            ),
            (
                "/v2/x/manifests/latest",
                Endpoint::Manifest {
                    reference: "latest".into(),
                },
                Some("x"),
            ),
            ("/v2/x/y/tags/list", Endpoint::TagsList, Some("x/y")),
            (
                "/v2/x/referrers/sha256:cd",
                Endpoint::Referrers {
                    digest: "sha256:cd".into(),
                },
                Some("x"),
            ),
            // A segment that looks like a keyword is part of the name (longest prefix wins).
            (
                "/v2/blobs/manifests/blobs/sha256:ab",
                Endpoint::Blob {
                    digest: "sha256:ab".into(),
                },
                Some("blobs/manifests"),
            ),
            ("/v2/a/uploads/x", Endpoint::Other, None),
            ("/v2//blobs/sha256:ab", Endpoint::Other, None),
            // Kept so the edge can answer NAME_INVALID.
            (
                "/v2/a//b/manifests/x",
                Endpoint::Manifest {
                    reference: "x".into(),
                },
                Some("a//b"),
            ),
            ("/v2/blobs/sha256:ab", Endpoint::Other, None),
            ("/healthz", Endpoint::Outside, None),
            ("/v2x", Endpoint::Outside, None),
        ];
        for (path, endpoint, name) in cases {
            let route = Route::parse(&Method::GET, path);
            assert_eq!(&route.endpoint, endpoint, "{path}");
            assert_eq!(route.repository.as_deref(), *name, "{path}");
        }
    }

    #[test]
    fn actions_follow_method_and_endpoint() {
        let cases: &[(&str, &str, Action, bool)] = &[
            ("GET", "/v2/a/manifests/v1", Action::Read, false),
            ("HEAD", "/v2/a/blobs/sha256:ab", Action::Read, false),
            ("POST", "/v2/a/blobs/uploads/", Action::PushStart, true),
            ("PUT", "/v2/a/manifests/v1", Action::PushStart, true),
            ("PATCH", "/v2/a/blobs/uploads/u", Action::Write, true),
            ("PUT", "/v2/a/blobs/uploads/u", Action::Write, true),
            ("POST", "/v2/a/manifests/v1", Action::Write, true),
            ("DELETE", "/v2/a/manifests/sha256:ab", Action::Delete, true),
            ("OPTIONS", "/v2/a/manifests/v1", Action::Other, false),
            ("POST", "/v2/unknown", Action::Write, true),
            // Outside the API nothing changes the registry, whatever the method.
            ("POST", "/jwt/auth", Action::Write, false),
            ("DELETE", "/other", Action::Delete, false),
        ];
        for (method, path, action, changes) in cases {
            let route = Route::parse(&method.parse().unwrap(), path);
            assert_eq!(route.action, *action, "{method} {path}");
            assert_eq!(route.changes_registry(), *changes, "{method} {path}");
        }
    }

    #[test]
    fn decoding_refuses_hidden_separators() {
        assert_eq!(
            decoded_path("/v2/a/b/manifests/v1").as_deref(),
            Some("/v2/a/b/manifests/v1")
        );
        assert_eq!(
            decoded_path("/v2/%2e%2e/x/manifests/v1").as_deref(),
            Some("/v2/../x/manifests/v1")
        );
        assert_eq!(
            decoded_path("/v2/a/blobs/sha256%3Aab").as_deref(),
            Some("/v2/a/blobs/sha256:ab")
        );
        assert_eq!(decoded_path("/v2/a/blobs%2Fuploads/"), None);
        assert_eq!(decoded_path("/v2/a%2fb/blobs/uploads/"), None);
        assert_eq!(decoded_path("/v2/%ff/manifests/x"), None);
    }

    #[test]
    fn upload_start_and_session_share_the_repository() {
        assert_eq!(
            repo("/v2/team/app/blobs/uploads/"),
            repo("/v2/team/app/blobs/uploads/abc")
        );
        assert_eq!(
            repo("/v2/team/app/blobs/uploads/"),
            repo("/v2/team/app/manifests/v1")
        );
    }
}
