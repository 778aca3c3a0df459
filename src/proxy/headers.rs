//! Forwarding headers sent to registry nodes, and hop-by-hop header removal.
//!
//! The registry copies `Forwarded` / `X-Forwarded-Proto` / `X-Forwarded-Host` into
//! absolute upload `Location` URLs verbatim, so from an untrusted peer these headers
//! are REPLACED or removed — never appended to or passed through — or a client could
//! point other clients' uploads at a host of its choosing.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue, CONNECTION, FORWARDED, HOST, TE, TRAILER, UPGRADE};
use pingora::http::RequestHeader;

use crate::request::client::{forwarded_for_chain, ClientAddress};
use crate::request::origin::{PublicOrigin, Source};

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_FORWARDED_PORT: &str = "x-forwarded-port";
const X_REAL_IP: &str = "x-real-ip";

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Framing headers Pingora manages itself; never dropped even if `Connection` lists them.
const FRAMING: &[&str] = &["transfer-encoding", "content-length", "host"];

/// Rewrites `req` (the request about to go upstream) for a registry node; `origin` is the
/// public origin ([`PublicOrigin`]) the registry's `Location`s must name.
///
/// Per request this costs one formatted address and one copy per inserted header name:
/// Pingora's `insert_header` parses every name into an owned `HeaderName`. Values reuse what
/// exists: the scheme is static, the client's address is shared by `X-Real-IP` and
/// `X-Forwarded-For` when they agree, and `X-Forwarded-Host` shares the request's `Host`
/// bytes when the origin came from it.
pub(crate) fn rewrite_for_upstream(
    req: &mut RequestHeader,
    client: &ClientAddress,
    origin: &PublicOrigin,
) {
    strip_hop_by_hop(req);

    let chain = if client.peer_trusted {
        forwarded_for_chain(req)
    } else {
        Vec::new()
    };
    let peer = address_value(client.peer);
    let forwarded_for = if chain.is_empty() {
        peer.clone()
    } else {
        let joined = format!("{}, {}", chain.join(", "), client.peer);
        HeaderValue::from_str(&joined).unwrap_or_else(|_| peer.clone())
    };
    let real_ip = match client.client == client.peer {
        true => peer,
        false => address_value(client.client),
    };
    let host = match origin.source {
        Source::Host => req
            .headers
            .get(HOST)
            .filter(|v| v.as_bytes() == origin.authority.as_bytes())
            .cloned(),
        _ => None,
    };
    let host = host.or_else(|| HeaderValue::from_str(&origin.authority).ok());

    set(req, X_REAL_IP, Some(real_ip));
    set(req, X_FORWARDED_FOR, Some(forwarded_for));
    set(
        req,
        X_FORWARDED_PROTO,
        Some(HeaderValue::from_static(origin.scheme)),
    );
    set(req, X_FORWARDED_HOST, host);
}

/// An address as a header value (digits, dots, colons and hex are always valid). A
/// `String` becomes the value's bytes without a copy: one allocation.
fn address_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn set(req: &mut RequestHeader, name: &'static str, value: Option<HeaderValue>) {
    // A `&'static str` name reaches Pingora's case map without a copy (a `HeaderName` of a
    // non-standard name would be copied there once more); insert replaces every value sent.
    match value {
        Some(value) => {
            let _ = req.insert_header(name, value);
        }
        None => {
            req.remove_header(name);
        }
    }
}

/// Names removed from every request: hop-by-hop fields, and the `Forwarded` /
/// `X-Forwarded-Port` the registry would prefer over the origin set here (`Forwarded` takes
/// precedence over X-Forwarded-* in the registry, and it appends X-Forwarded-Port to a host
/// without one: either would make upload `Location`s disagree with the origin).
fn always_removed(name: &HeaderName) -> bool {
    [CONNECTION, TE, TRAILER, UPGRADE, FORWARDED].contains(name)
        || HOP_BY_HOP.contains(&name.as_str())
        || name.as_str() == X_FORWARDED_PORT
}

fn strip_hop_by_hop(req: &mut RequestHeader) {
    // Most requests carry none of these: one pass over the few names sent spares a dozen
    // lookups, each of which would hash its name.
    if !req.headers.keys().any(always_removed) {
        return;
    }
    let listed: Vec<HeaderName> = req
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !FRAMING.contains(&name.as_str()))
        .collect();
    for name in listed {
        req.remove_header(&name);
    }
    let present: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|name| always_removed(name))
        .cloned()
        .collect();
    for name in present {
        req.remove_header(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExternalUrl;
    use crate::config::ForwardedSettings;

    fn rewrite_for_upstream(
        req: &mut RequestHeader,
        client: &ClientAddress,
        external: Option<&ExternalUrl>,
    ) {
        let origin = PublicOrigin::of(req, client.peer_trusted, external, None);
        super::rewrite_for_upstream(req, client, &origin);
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req =
            RequestHeader::build("PATCH", b"/v2/a/blobs/uploads/x?_state=abc", None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    fn trust(cidrs: &[&str]) -> ForwardedSettings {
        ForwardedSettings {
            trusted_proxies: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        }
    }

    fn header(req: &RequestHeader, name: &str) -> Option<String> {
        let values: Vec<_> = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        (!values.is_empty()).then(|| values.join("|"))
    }

    #[test]
    fn untrusted_peer_cannot_steer_location() {
        let mut req = request(&[
            ("Host", "registry.test:8443"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Port", "80"),
            ("Forwarded", "host=evil.example;proto=http"),
            ("X-Real-IP", "1.2.3.4"),
        ]);
        let client = ClientAddress::resolve("192.0.2.7".parse().unwrap(), &req, &trust(&[]));
        rewrite_for_upstream(&mut req, &client, None);
        assert_eq!(
            header(&req, "x-forwarded-host").as_deref(),
            Some("registry.test:8443")
        );
        assert_eq!(header(&req, "x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(
            header(&req, "x-forwarded-for").as_deref(),
            Some("192.0.2.7")
        );
        assert_eq!(header(&req, "x-real-ip").as_deref(), Some("192.0.2.7"));
        assert_eq!(header(&req, "forwarded"), None);
        assert_eq!(header(&req, "x-forwarded-port"), None);
        assert_eq!(header(&req, "host").as_deref(), Some("registry.test:8443"));
        assert_eq!(req.uri.query(), Some("_state=abc"));
    }

    #[test]
    fn trusted_proxy_chain_is_kept_and_extended() {
        let mut req = request(&[
            ("Host", "registry.test"),
            ("X-Forwarded-For", "203.0.113.9, 10.0.0.5"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "registry.example.com"),
            ("Forwarded", "for=203.0.113.9;proto=https"),
        ]);
        let client =
            ClientAddress::resolve("10.0.0.2".parse().unwrap(), &req, &trust(&["10.0.0.0/8"]));
        assert_eq!(client.client, "203.0.113.9".parse::<IpAddr>().unwrap());
        rewrite_for_upstream(&mut req, &client, None);
        assert_eq!(
            header(&req, "x-forwarded-for").as_deref(),
            Some("203.0.113.9, 10.0.0.5, 10.0.0.2")
        );
        assert_eq!(header(&req, "x-real-ip").as_deref(), Some("203.0.113.9"));
        assert_eq!(
            header(&req, "x-forwarded-host").as_deref(),
            Some("registry.example.com")
        );
        // The origin is decided once; the registry must not rebuild another from these.
        assert_eq!(header(&req, "forwarded"), None);
        assert_eq!(header(&req, "x-forwarded-port"), None);
    }

    #[test]
    fn trusted_proxy_with_garbage_proto_falls_back_to_https() {
        let mut req = request(&[("Host", "r"), ("X-Forwarded-Proto", "https, http")]);
        let client =
            ClientAddress::resolve("10.0.0.2".parse().unwrap(), &req, &trust(&["10.0.0.2/32"]));
        rewrite_for_upstream(&mut req, &client, None);
        assert_eq!(header(&req, "x-forwarded-proto").as_deref(), Some("https"));
        let mut req = request(&[("Host", "r"), ("X-Forwarded-Proto", "ftp")]);
        rewrite_for_upstream(&mut req, &client, None);
        assert_eq!(header(&req, "x-forwarded-proto").as_deref(), Some("https"));
    }

    #[test]
    fn external_url_sets_forwarded_host() {
        let mut req = request(&[("Host", "127.0.0.1:8443")]);
        let client = ClientAddress::resolve("127.0.0.1".parse().unwrap(), &req, &trust(&[]));
        let external = ExternalUrl {
            authority: "registry.example.com".into(),
        };
        rewrite_for_upstream(&mut req, &client, Some(&external));
        assert_eq!(
            header(&req, "x-forwarded-host").as_deref(),
            Some("registry.example.com")
        );
        assert_eq!(header(&req, "host").as_deref(), Some("127.0.0.1:8443"));
    }

    #[test]
    fn hop_by_hop_headers_are_removed_but_framing_kept() {
        let mut req = request(&[
            ("Host", "r"),
            ("Connection", "keep-alive, X-Secret-Hop, Transfer-Encoding"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authorization", "Basic eDp5"),
            ("Transfer-Encoding", "chunked"),
            ("Range", "bytes=0-9"),
            ("Content-Range", "0-9"),
        ]);
        let client = ClientAddress::resolve("127.0.0.1".parse().unwrap(), &req, &trust(&[]));
        rewrite_for_upstream(&mut req, &client, None);
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "proxy-authorization",
        ] {
            assert_eq!(header(&req, gone), None, "{gone}");
        }
        assert_eq!(
            header(&req, "transfer-encoding").as_deref(),
            Some("chunked")
        );
        assert_eq!(header(&req, "range").as_deref(), Some("bytes=0-9"));
        assert_eq!(header(&req, "content-range").as_deref(), Some("0-9"));
    }
}
