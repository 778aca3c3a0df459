//! The PROXY protocol (HAProxy's v1 text and v2 binary headers): an L4 load balancer
//! writes one header before any client byte, naming the client it accepted. Parsing is
//! the `ppp` crate's; this module only reads exactly as far as the header goes.

use std::net::SocketAddr;

use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Longest header accepted (v2 with TLVs the edge ignores); v1 is at most 107 bytes.
const MAX_HEADER: usize = 4096;

/// Why a connection on a PROXY-protocol listener was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyHeaderError {
    #[error("connection closed before a PROXY header")]
    Closed,
    #[error("no valid PROXY header: {0}")]
    Invalid(String),
    #[error("PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// What the header said.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ProxyHeader {
    /// The client the balancer accepted; `None` for its own connections (v2 LOCAL, v1
    /// UNKNOWN: health checks), which keep the socket's peer.
    pub client: Option<SocketAddr>,
    /// Bytes read past the header: the start of the client's stream.
    pub rest: Vec<u8>,
}

/// Reads the header at the start of `tcp`.
pub(crate) async fn read_header(tcp: &mut TcpStream) -> Result<ProxyHeader, ProxyHeaderError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(parsed) = parse(&buf)? {
            return Ok(parsed);
        }
        if buf.len() > MAX_HEADER {
            return Err(ProxyHeaderError::TooLong);
        }
    }
}

/// `Ok(None)` while the header is incomplete.
fn parse(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return Ok(None);
    }
    let (len, client) = match result {
        HeaderResult::V1(Ok(header)) => {
            let client = match header.addresses {
                v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                v1::Addresses::Unknown => None,
            };
            (header.header.len(), client)
        }
        HeaderResult::V2(Ok(header)) => {
            let client = match (header.command, header.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::new(a.source_address.into(), a.source_port))
                }
                _ => None,
            };
            (header.len(), client)
        }
        HeaderResult::V1(Err(e)) => return Err(ProxyHeaderError::Invalid(format!("v1: {e}"))),
        HeaderResult::V2(Err(e)) => return Err(ProxyHeaderError::Invalid(format!("v2: {e}"))),
    };
    Ok(Some(ProxyHeader {
        client,
        rest: buf[len..].to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_headers_name_the_client_and_keep_what_follows() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n\x16\x03\x01";
        let parsed = parse(v1).unwrap().unwrap();
        assert_eq!(parsed.client, Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(parsed.rest, b"\x16\x03\x01");

        let addresses: v2::Addresses = (
            "[2001:db8::5]:40000".parse::<SocketAddr>().unwrap(),
            "[2001:db8::1]:443".parse::<SocketAddr>().unwrap(),
        )
            .into();
        let mut v2 = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            addresses,
        )
        .build()
        .unwrap();
        v2.extend_from_slice(b"GET");
        let parsed = parse(&v2).unwrap().unwrap();
        assert_eq!(parsed.client, Some("[2001:db8::5]:40000".parse().unwrap()));
        assert_eq!(parsed.rest, b"GET");

        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap().client, None);
        assert!(parse(b"PROXY TCP4 203.0").unwrap().is_none(), "incomplete");
        assert!(parse(b"GET / HTTP/1.1\r\n").is_err());
        assert!(parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").is_err());
    }
}
