//! The public origin: the scheme and authority clients reach the registry at.
//!
//! One function decides it, and every absolute URL the edge writes uses it: the token
//! realm in `WWW-Authenticate` challenges, plain-HTTP redirects, and the
//! `X-Forwarded-Host` / `X-Forwarded-Proto` the registry builds upload `Location`s from.
//! Otherwise a client behind a load balancer would be sent to the edge's internal name for
//! tokens while its uploads go to the public one.
//!
//! Precedence: `server.external_url`; else `X-Forwarded-Host` (with `X-Forwarded-Proto`)
//! from a trusted proxy (`forwarded.trusted_proxies`); else the request's `Host`
//! (`:authority` on h2); else the listener's own address.

use std::net::SocketAddr;

use pingora::http::RequestHeader;

use super::request_host;
use crate::config::ExternalUrl;

const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_FORWARDED_PORT: &str = "x-forwarded-port";

/// Where the public origin came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    ExternalUrl,
    /// `X-Forwarded-Host` from a trusted proxy.
    TrustedProxy,
    /// The request's own `Host` / `:authority`.
    Host,
    /// No usable host in the request: the listener's address.
    Listener,
}

/// `scheme://authority` as clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublicOrigin {
    /// `https`, or `http` only when a trusted proxy says so.
    pub scheme: &'static str,
    /// `host[:port]`, as it goes into a URL.
    pub authority: String,
    pub source: Source,
}

impl PublicOrigin {
    /// Decides the origin for `req`. `peer_trusted`: the TCP peer is a trusted proxy, so its
    /// `X-Forwarded-*` headers are believed. `local`: the listener's address, the last resort.
    pub(crate) fn of(
        req: &RequestHeader,
        peer_trusted: bool,
        external: Option<&ExternalUrl>,
        local: Option<SocketAddr>,
    ) -> PublicOrigin {
        let trusted = |name| peer_trusted.then(|| first_value(req, name)).flatten();
        let scheme = match trusted(X_FORWARDED_PROTO).map(|p| p.to_ascii_lowercase()) {
            Some(p) if p == "http" && external.is_none() => "http",
            _ => "https",
        };
        let (authority, source) = if let Some(external) = external {
            (external.authority.clone(), Source::ExternalUrl)
        } else if let Some(host) = trusted(X_FORWARDED_HOST).filter(|h| is_plain_authority(h)) {
            (
                with_port(host, trusted(X_FORWARDED_PORT), scheme),
                Source::TrustedProxy,
            )
        } else if let Some(host) = request_host(req).filter(|h| is_plain_authority(h)) {
            (host, Source::Host)
        } else {
            let listener = local.map_or_else(|| "localhost".to_string(), |a| a.to_string());
            (listener, Source::Listener)
        };
        PublicOrigin {
            scheme,
            authority,
            source,
        }
    }

    /// `scheme://authority` followed by `path` (which starts with `/`).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.authority)
    }
}

/// A trusted `X-Forwarded-Port` completes a host without a port, as distribution does
/// (`registry/api/v2/urls.go`); the scheme's default port is left out.
fn with_port(host: String, port: Option<String>, scheme: &str) -> String {
    let Some(port) = port.and_then(|p| p.parse::<u16>().ok()) else {
        return host;
    };
    let has_port = host
        .parse::<http::uri::Authority>()
        .is_ok_and(|a| a.port_u16().is_some());
    let default = matches!((scheme, port), ("https", 443) | ("http", 80));
    match has_port || default {
        true => host,
        false => format!("{host}:{port}"),
    }
}

/// `host` or `host:port` with no userinfo, path or other characters a URL would read
/// differently (`https://a@b/` points at `b`).
pub(crate) fn is_plain_authority(value: &str) -> bool {
    !value.contains('@')
        && value.parse::<http::uri::Authority>().is_ok_and(|a| {
            // `http` accepts any digits as a port; a URL needs one that fits in 16 bits.
            let port_ok = match value.strip_prefix(a.host()) {
                Some("") => true,
                Some(rest) => rest
                    .strip_prefix(':')
                    .is_some_and(|p| p.parse::<u16>().is_ok()),
                None => false,
            };
            !a.host().is_empty() && a.as_str() == value && port_ok
        })
}

fn first_value(req: &RequestHeader, name: &str) -> Option<String> {
    let value = req.headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/v2/", None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    const BEHIND_LB: &[(&str, &str)] = &[
        ("Host", "edge-1.internal:8443"),
        ("X-Forwarded-Host", "registry.example.com"),
        ("X-Forwarded-Proto", "https"),
    ];

    #[test]
    fn trusted_forwarded_host_wins_over_host() {
        let origin = PublicOrigin::of(&req(BEHIND_LB), true, None, None);
        assert_eq!(
            origin.url("/jwt/auth"),
            "https://registry.example.com/jwt/auth"
        );
        assert_eq!(origin.source, Source::TrustedProxy);
    }

    #[test]
    fn untrusted_forwarded_headers_are_ignored() {
        let origin = PublicOrigin::of(&req(BEHIND_LB), false, None, None);
        assert_eq!(origin.url("/x"), "https://edge-1.internal:8443/x");
        let http = req(&[("Host", "h"), ("X-Forwarded-Proto", "http")]);
        assert_eq!(PublicOrigin::of(&http, false, None, None).scheme, "https");
        assert_eq!(PublicOrigin::of(&http, true, None, None).scheme, "http");
    }

    #[test]
    fn a_trusted_forwarded_port_completes_the_host() {
        let lb = |port: &str, host: &str| {
            let r = req(&[
                ("Host", "edge-1.internal:8443"),
                ("X-Forwarded-Host", host),
                ("X-Forwarded-Port", port),
            ]);
            PublicOrigin::of(&r, true, None, None).authority
        };
        assert_eq!(
            lb("8443", "registry.example.com"),
            "registry.example.com:8443"
        );
        assert_eq!(lb("443", "registry.example.com"), "registry.example.com");
        assert_eq!(
            lb("8443", "registry.example.com:9000"),
            "registry.example.com:9000"
        );
        assert_eq!(lb("x", "registry.example.com"), "registry.example.com");
    }

    #[test]
    fn external_url_wins_over_everything() {
        let external = ExternalUrl {
            authority: "public.example".into(),
        };
        let origin = PublicOrigin::of(&req(BEHIND_LB), true, Some(&external), None);
        assert_eq!(origin.url("/v2/"), "https://public.example/v2/");
    }

    #[test]
    fn unusable_hosts_fall_back_to_the_listener() {
        let local = "127.0.0.1:8443".parse().ok();
        for host in ["evil@x", "a b", "x/y", "x:99999"] {
            let origin = PublicOrigin::of(&req(&[("Host", host)]), false, None, local);
            assert_eq!(origin.url("/"), "https://127.0.0.1:8443/", "{host}");
        }
        let spoof = req(&[("Host", "h"), ("X-Forwarded-Host", "a@evil")]);
        assert_eq!(PublicOrigin::of(&spoof, true, None, local).authority, "h");
    }
}
