//! What a registry request needs from a token, exactly as distribution's `App.authorized`
//! decides it (`registry-auth.md` §2): GET/HEAD → pull; POST/PUT/PATCH → pull+push;
//! DELETE → delete; a blob mount also needs pull on its source; the catalog needs
//! `registry:catalog:*`; `/v2/` needs any valid token.

use crate::registry::{is_valid_repository, Scope};
use crate::registry::{Action, Endpoint, Route};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needed {
    /// Not a registry API path: the edge does not check it.
    Nothing,
    /// Any valid token, even with empty access (`/v2/`, unknown `/v2/…` paths).
    AnyToken,
    /// Every scope must be granted.
    Scopes(Vec<Scope>),
}

/// The access the request classified as `route` (with its `query`) needs.
pub fn needed(route: &Route, query: Option<&str>) -> Needed {
    if !route.is_api() {
        return Needed::Nothing;
    }
    let Some(repository) = &route.repository else {
        return match route.endpoint {
            Endpoint::Catalog => Needed::Scopes(vec![Scope::catalog()]),
            _ => Needed::AnyToken,
        };
    };
    let mut scopes = vec![Scope::repository(repository, route.action.token_actions())];
    if route.endpoint == Endpoint::UploadStart && route.action == Action::PushStart {
        let mount = query
            .into_iter()
            .flat_map(|q| url::form_urlencoded::parse(q.as_bytes()));
        let from: Vec<String> = mount
            .filter(|(k, _)| k == "from")
            .map(|(_, v)| v.into_owned())
            .collect();
        for source in from {
            if is_valid_repository(&source) && &source != repository {
                scopes.push(Scope::repository(&source, &["pull"]));
            }
        }
    }
    Needed::Scopes(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, target: &str) -> Needed {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        needed(&Route::parse(&method.parse().unwrap(), path), query)
    }

    fn scopes(list: &[(&str, &[&str])]) -> Needed {
        Needed::Scopes(list.iter().map(|(n, a)| Scope::repository(n, a)).collect())
    }

    #[test]
    fn classification_table() {
        let cases: Vec<(&str, &str, Needed)> = vec![
            ("GET", "/v2/", Needed::AnyToken),
            ("GET", "/v2", Needed::AnyToken),
            (
                "GET",
                "/v2/_catalog",
                Needed::Scopes(vec![Scope::catalog()]),
            ),
            (
                "GET",
                "/v2/a/b/manifests/latest",
                scopes(&[("a/b", &["pull"])]),
            ),
            ("HEAD", "/v2/a/blobs/sha256:00", scopes(&[("a", &["pull"])])),
            (
                "POST",
                "/v2/a/blobs/uploads/",
                scopes(&[("a", &["pull", "push"])]),
            ),
            (
                "PATCH",
                "/v2/a/blobs/uploads/uuid",
                scopes(&[("a", &["pull", "push"])]),
            ),
            (
                "PUT",
                "/v2/a/manifests/v1",
                scopes(&[("a", &["pull", "push"])]),
            ),
            (
                "DELETE",
                "/v2/a/manifests/sha256:00",
                scopes(&[("a", &["delete"])]),
            ),
            (
                "DELETE",
                "/v2/a/blobs/uploads/uuid",
                scopes(&[("a", &["delete"])]),
            ),
            ("GET", "/v2/a/tags/list", scopes(&[("a", &["pull"])])),
            (
                "POST",
                "/v2/a/blobs/uploads/?mount=sha256:00&from=lib/src",
                scopes(&[("a", &["pull", "push"]), ("lib/src", &["pull"])]),
            ),
            (
                "POST",
                "/v2/a/blobs/uploads/?mount=sha256:00&from=..%2Fx",
                scopes(&[("a", &["pull", "push"])]),
            ),
            ("GET", "/v2/unknown", Needed::AnyToken),
            ("GET", "/", Needed::Nothing),
            ("GET", "/jwt/auth", Needed::Nothing),
        ];
        for (method, target, expected) in cases {
            assert_eq!(check(method, target), expected, "{method} {target}");
        }
    }
}
