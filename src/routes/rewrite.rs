//! The pool's names and the edge's: a routed request's path on the way to the pool, and
//! what comes back naming the repository (`Location`, `Link`, a tag list's `name`) on the
//! way to a client that used the route's prefix (OCI distribution spec: upload `Location`s,
//! tag-list pagination `Link`s and the tag list body name the repository).

use super::table::Routed;

/// Largest tag list body the edge rewrites (it is held whole); a longer one is cut short
/// with an error rather than passed with the pool's name. distribution pages at 100 tags
/// by default, clients ask at most a few thousand per page.
pub(crate) const MAX_TAG_LIST: usize = 16 << 20;

/// A tag list's body held whole until its end, to be sent with the edge's name.
#[derive(Default)]
pub(crate) struct TagListBody(pub Vec<u8>);

/// The request's path as sent (`/v2/<client's name>/<rest>`, not decoded: the pool decodes
/// the rest as the default pool would) as the pool routes it, `/v2/<pool's name>/<rest>`;
/// `None` when the name is not written plainly (percent-encoded: no client does that).
pub(crate) fn pool_path(
    routed: &Routed,
    client_repository: &str,
    raw_path: &str,
) -> Option<String> {
    let rest = raw_path
        .strip_prefix("/v2/")?
        .strip_prefix(client_repository)
        .filter(|rest| rest.starts_with('/'))?;
    Some(format!("/v2/{}{rest}", routed.pool_repository))
}

/// The query towards the pool: a cross-repository mount (`mount`, `from`) is dropped, so
/// the pool starts a plain upload (OCI distribution spec: a registry may always answer a
/// mount with a new upload session); `from` names a repository the edge checked as its own
/// name, not one of the pool's. `None` when nothing is left.
pub(crate) fn pool_query(query: Option<&str>) -> Option<String> {
    let query = query?;
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key != "mount" && key != "from")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let unchanged = !query.contains("mount=") && !query.contains("from=");
    match unchanged {
        true => Some(query.to_string()),
        false => Some(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish(),
        ),
    }
}

/// A `Location` or `Link` value from the pool with its repository path given the edge's
/// name; `None` when it names none (or the client used the pool's names).
pub(crate) fn edge_reference(routed: &Routed, value: &str) -> Option<String> {
    if !routed.by_prefix {
        return None;
    }
    let pool = format!("/v2/{}/", routed.pool_repository);
    let at = value.find(&pool)?;
    Some(format!(
        "{}/v2/{}/{}",
        &value[..at],
        routed.edge_repository,
        &value[at + pool.len()..]
    ))
}

/// A tag list body (`{"name": …, "tags": […]}`) with the edge's name; `None` when the body
/// is not one (then it is passed as it came).
pub(crate) fn edge_tag_list(routed: &Routed, body: &[u8]) -> Option<Vec<u8>> {
    if !routed.by_prefix {
        return None;
    }
    let mut list: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    let name = list.get_mut("name")?;
    if name.as_str() != Some(routed.pool_repository.as_str()) {
        return None;
    }
    *name = serde_json::Value::String(routed.edge_repository.clone());
    serde_json::to_vec(&list).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(by_prefix: bool) -> Routed {
        let text = "server: { https_listen: [] }\nupstream: { nodes: [\"127.0.0.1:5000\"] }\n\
                    routes: [{ name: hub, prefix: hub/, nodes: [\"127.0.0.1:5001\"] }]\n";
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::parse(&dir.path().join("e.yaml"), text).unwrap();
        let routes = super::super::Routes::new(&config.routes, None).unwrap();
        let mut routed = routes.route_for(None, None, "hub/library/app").unwrap();
        routed.by_prefix = by_prefix;
        routed
    }

    #[test]
    fn paths_headers_and_tag_lists_change_names() {
        let r = routed(true);
        let path = "/v2/hub/library/app/blobs/uploads/";
        assert_eq!(
            pool_path(&r, "hub/library/app", path).unwrap(),
            "/v2/library/app/blobs/uploads/"
        );
        // The rest goes as sent (the pool decodes it once); an encoded name is refused.
        let escaped = "/v2/hub/library/app/blobs/uploads/%3Fmount=x";
        assert_eq!(
            pool_path(&r, "hub/library/app", escaped).unwrap(),
            "/v2/library/app/blobs/uploads/%3Fmount=x"
        );
        assert_eq!(
            pool_path(&r, "hub/library/app", "/v2/hub/librar%79/app/x"),
            None
        );
        assert_eq!(
            pool_query(Some("mount=sha256:aa&from=hub/other")),
            None,
            "a mount becomes a plain upload"
        );
        assert_eq!(
            pool_query(Some("digest=sha256:aa&_state=s")).as_deref(),
            Some("digest=sha256:aa&_state=s")
        );
        let location = "https://edge.test/v2/library/app/blobs/uploads/u1?_state=x";
        assert_eq!(
            edge_reference(&r, location).unwrap(),
            "https://edge.test/v2/hub/library/app/blobs/uploads/u1?_state=x"
        );
        let link = "</v2/library/app/tags/list?last=a&n=1>; rel=\"next\"";
        assert_eq!(
            edge_reference(&r, link).unwrap(),
            "</v2/hub/library/app/tags/list?last=a&n=1>; rel=\"next\""
        );
        assert_eq!(edge_reference(&r, "/v2/other/x/"), None);
        let body = br#"{"name":"library/app","tags":["1","2"]}"#;
        let rewritten = edge_tag_list(&r, body).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&rewritten).unwrap();
        assert_eq!(value["name"], "hub/library/app");
        assert_eq!(value["tags"], serde_json::json!(["1", "2"]));
        assert_eq!(edge_tag_list(&r, b"not json"), None);

        // A client that used the pool's names (hosts, ns) sees them unchanged.
        assert_eq!(edge_reference(&routed(false), location), None);
    }
}
