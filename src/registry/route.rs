//! Classifies `/v2/…` paths into registry endpoints and extracts the repository.
//!
//! Parsed once per request; later phases (upstream choice, auth, limits) match on
//! the result instead of re-reading the path. Repository names may have any number
//! of segments, so the endpoint is found from the END of the path, as distribution's
//! router does (the name is the longest prefix that leaves a valid endpoint).

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
    /// Anything else (not a registry API path, or an unknown one).
    Other,
}

/// A parsed request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub endpoint: Endpoint,
    /// The repository name, for endpoints under `/v2/<name>/`.
    pub repository: Option<String>,
}

impl Route {
    /// Parses the path part of a request target (the query must already be removed).
    pub fn parse(path: &str) -> Route {
        let other = Route {
            endpoint: Endpoint::Other,
            repository: None,
        };
        let Some(rest) = path.strip_prefix("/v2/") else {
            return if path == "/v2" {
                Route {
                    endpoint: Endpoint::Base,
                    repository: None,
                }
            } else {
                other
            };
        };
        match rest {
            "" => {
                return Route {
                    endpoint: Endpoint::Base,
                    repository: None,
                }
            }
            "_catalog" => {
                return Route {
                    endpoint: Endpoint::Catalog,
                    repository: None,
                }
            }
            _ => {}
        }
        if let Some(name) = rest
            .strip_suffix("/blobs/uploads/")
            .or_else(|| rest.strip_suffix("/blobs/uploads"))
        {
            return Route::with_name(name, Endpoint::UploadStart);
        }
        let Some((prefix, last)) = rest.rsplit_once('/') else {
            return other;
        };
        let Some((name, keyword)) = prefix.rsplit_once('/') else {
            return other;
        };
        let last = last.to_string();
        let endpoint = match keyword {
            "blobs" => Endpoint::Blob { digest: last },
            "manifests" => Endpoint::Manifest { reference: last },
            "referrers" => Endpoint::Referrers { digest: last },
            "tags" if last == "list" => Endpoint::TagsList,
            "uploads" => match name.strip_suffix("/blobs") {
                Some(name) => {
                    return Route::with_name(name, Endpoint::UploadSession { uuid: last })
                }
                None => return other,
            },
            _ => return other,
        };
        Route::with_name(name, endpoint)
    }

    fn with_name(name: &str, endpoint: Endpoint) -> Route {
        // An empty name is no repository; any other name is kept, valid or not, so the
        // caller can refuse it with NAME_INVALID instead of passing it on as "unknown".
        if name.is_empty() {
            return Route {
                endpoint: Endpoint::Other,
                repository: None,
            };
        }
        Route {
            endpoint,
            repository: Some(name.to_string()),
        }
    }
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
        Route::parse(path).repository
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
            ("/healthz", Endpoint::Other, None),
        ];
        for (path, endpoint, name) in cases {
            let route = Route::parse(path);
            assert_eq!(&route.endpoint, endpoint, "{path}");
            assert_eq!(route.repository.as_deref(), *name, "{path}");
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
