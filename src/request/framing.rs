//! What makes a request one the edge can pass on unambiguously, beyond what Pingora's
//! parser checks: the request target, `Host`, and the framing headers. Shared by the HTTPS
//! proxy (admission) and the plain-HTTP listener, so both refuse the same requests with
//! the registry's JSON error rather than forwarding what the registry would answer in its
//! own words (or redirecting to a made-up place).
//!
//! Rules (RFC 9112 §3.2, §6.1; RFC 9110 §7.2, §8.6):
//! - the target is origin-form (`/…`), or `*` for `OPTIONS`: an authority-form target, or
//!   one Pingora had to escape into something else, is not a registry request;
//! - `Host` (h2: `:authority`) is an authority with a host, a valid port if any, and no
//!   userinfo; HTTP/1.1 needs one (HTTP/1.0 may omit it);
//! - `Transfer-Encoding`, when present, is one `chunked` (besides the no-op `identity`): a
//!   coding the edge does not implement is 501, chunked twice is malformed;
//! - `Content-Length` sent more than once with the same value is reduced to one value,
//!   as RFC 9110 §8.6 allows, so the node is never handed a list (Pingora has refused
//!   differing values already).

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Method, Version};
use pingora::http::RequestHeader;

use crate::error::RegistryError;

/// Checks `req` (an HTTP/2 request when `http2`) against the rules above, normalising a
/// repeated `Content-Length`. `Err` is the answer to give.
pub(crate) fn check(req: &mut RequestHeader, http2: bool) -> Result<(), RegistryError> {
    if req.method == Method::CONNECT {
        return Err(RegistryError::MethodNotAllowed);
    }
    let target = req.raw_path();
    let origin_form = target.first() == Some(&b'/');
    let asterisk_form = target == b"*" && req.method == Method::OPTIONS;
    if !(origin_form || asterisk_form) {
        return Err(RegistryError::BadRequest);
    }
    match req.headers.get(HOST) {
        Some(host) => host_is_valid(host.as_bytes())?,
        None if http2 || req.version == Version::HTTP_10 => {}
        None => return Err(RegistryError::MissingHost),
    }
    if !http2 {
        transfer_coding(req)?;
        single_content_length(req)?;
    }
    Ok(())
}

/// A `Host` value: an authority with a host, no userinfo, a port that is a port (the rule
/// the public origin applies, [`super::origin::is_plain_authority`]).
fn host_is_valid(value: &[u8]) -> Result<(), RegistryError> {
    match std::str::from_utf8(value) {
        Ok(host) if super::origin::is_plain_authority(host) => Ok(()),
        _ => Err(RegistryError::BadRequest),
    }
}

/// `Transfer-Encoding`: absent, or one `chunked` on one line.
fn transfer_coding(req: &RequestHeader) -> Result<(), RegistryError> {
    let mut codings = req
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .map(|coding| coding.trim_ascii())
        // `identity` (RFC 2616's no-op coding, gone since RFC 7230) changes nothing.
        .filter(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity"));
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(only), None) if only.eq_ignore_ascii_case(b"chunked") => Ok(()),
        (Some(first), Some(_)) if first.eq_ignore_ascii_case(b"chunked") => {
            Err(RegistryError::BadRequest)
        }
        _ => Err(RegistryError::TransferCodingUnsupported),
    }
}

/// A `Content-Length` sent as a list of one value (`2, 2`, or on two lines) becomes that
/// value.
fn single_content_length(req: &mut RequestHeader) -> Result<(), RegistryError> {
    let values: Vec<&[u8]> = req
        .headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    let Some(first) = values.first() else {
        return Ok(());
    };
    if values.len() == 1 {
        return Ok(());
    }
    if values.iter().any(|value| value != first) {
        return Err(RegistryError::BadRequest);
    }
    let single = std::str::from_utf8(first)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or(RegistryError::BadRequest)?;
    req.insert_header(CONTENT_LENGTH, single)
        .map_err(|_| RegistryError::BadRequest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    #[test]
    fn targets_hosts_and_framing() {
        let host = ("Host", "registry.example:8443");
        let cases: Vec<(RequestHeader, Result<(), RegistryError>)> = vec![
            (request("/v2/", &[host]), Ok(())),
            (
                request("localhost:8453", &[host]),
                Err(RegistryError::BadRequest),
            ),
            (
                request("%20/v2/%20", &[host]),
                Err(RegistryError::BadRequest),
            ),
            (request("/v2/", &[]), Err(RegistryError::MissingHost)),
            (
                request("/v2/", &[("Host", "local host")]),
                Err(RegistryError::BadRequest),
            ),
            (
                request("/v2/", &[("Host", "a/b")]),
                Err(RegistryError::BadRequest),
            ),
            (
                request("/v2/", &[("Host", "u@localhost")]),
                Err(RegistryError::BadRequest),
            ),
            (
                request("/v2/", &[("Host", "localhost:99999")]),
                Err(RegistryError::BadRequest),
            ),
            (
                request("/v2/", &[("Host", "localhost:abc")]),
                Err(RegistryError::BadRequest),
            ),
            (request("/v2/", &[("Host", "[::1]:8443")]), Ok(())),
            (request("/v2/", &[("Host", "[::1]")]), Ok(())),
            (
                request("/v2/", &[host, ("Transfer-Encoding", "gzip, chunked")]),
                Err(RegistryError::TransferCodingUnsupported),
            ),
            (
                request(
                    "/v2/",
                    &[
                        host,
                        ("Transfer-Encoding", "chunked"),
                        ("Transfer-Encoding", "chunked"),
                    ],
                ),
                Err(RegistryError::BadRequest),
            ),
            (
                request("/v2/", &[host, ("Transfer-Encoding", "Chunked")]),
                Ok(()),
            ),
        ];
        for (mut req, expected) in cases {
            let what = format!("{:?} {:?}", req.raw_path(), req.headers);
            assert_eq!(check(&mut req, false), expected, "{what}");
        }
        let mut connect = RequestHeader::build("CONNECT", b"localhost:443", None).unwrap();
        connect.insert_header("Host", "localhost").unwrap();
        assert_eq!(
            check(&mut connect, false),
            Err(RegistryError::MethodNotAllowed)
        );
        let mut options = RequestHeader::build("OPTIONS", b"*", None).unwrap();
        options.insert_header("Host", "localhost").unwrap();
        assert_eq!(check(&mut options, false), Ok(()));
    }

    #[test]
    fn a_repeated_content_length_becomes_one_value() {
        let mut listed = request("/v2/", &[("Host", "h"), ("Content-Length", "2, 2")]);
        assert_eq!(check(&mut listed, false), Ok(()));
        let values: Vec<_> = listed.headers.get_all(CONTENT_LENGTH).iter().collect();
        assert_eq!(values, ["2"]);
        let mut lines = request(
            "/v2/",
            &[
                ("Host", "h"),
                ("Content-Length", "7"),
                ("Content-Length", "7"),
            ],
        );
        assert_eq!(check(&mut lines, false), Ok(()));
        assert_eq!(lines.headers.get_all(CONTENT_LENGTH).iter().count(), 1);
        let mut differing = request("/v2/", &[("Host", "h"), ("Content-Length", "1, 2")]);
        assert_eq!(check(&mut differing, false), Err(RegistryError::BadRequest));
    }
}
