//! Who the client is: the TCP peer, and behind trusted proxies (`forwarded.trusted_proxies`)
//! the address their `X-Forwarded-For` chain names.

use std::net::IpAddr;

use pingora::http::RequestHeader;

use crate::config::ForwardedSettings;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client as the edge sees it: the TCP peer and, behind trusted proxies, the real client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddress {
    pub peer: IpAddr,
    pub peer_trusted: bool,
    /// The real client: the peer, or the rightmost untrusted address of a trusted chain.
    pub client: IpAddr,
}

impl ClientAddress {
    pub(crate) fn resolve(
        peer: IpAddr,
        req: &RequestHeader,
        trust: &ForwardedSettings,
    ) -> ClientAddress {
        let peer_trusted = trust.is_trusted(peer);
        let mut client = peer;
        if peer_trusted {
            // Walk the chain right to left past trusted hops, like nginx real_ip_recursive.
            for hop in forwarded_for_chain(req).iter().rev() {
                match hop.parse::<IpAddr>() {
                    Ok(ip) => {
                        client = ip;
                        if !trust.is_trusted(ip) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        ClientAddress {
            peer,
            peer_trusted,
            client,
        }
    }
}

/// The addresses of every `X-Forwarded-For` header, left to right.
pub(crate) fn forwarded_for_chain(req: &RequestHeader) -> Vec<String> {
    req.headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| hop.trim().to_string())
        .filter(|hop| !hop.is_empty())
        .collect()
}
