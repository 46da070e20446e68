//! The client's IP address, trusted-proxy aware: `X-Forwarded-For` is believed only when the
//! peer is a configured trusted proxy, and then read from the right, skipping the trusted
//! proxies' own entries — the first untrusted address is the client. A client can prepend
//! anything it likes to the header, so the leftmost entry is never trusted blindly.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use crate::state::AppState;

pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|network| network.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    // Walk back from the nearest hop. An entry that is not an address (`unknown`, garbage)
    // ends the walk: what lies left of it is whatever the client wrote, so the nearest
    // trusted hop we know is the best answer, never an earlier, client-supplied entry.
    let mut nearest_known = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_forwarded_entry(entry) else {
            return nearest_known;
        };
        if !is_trusted(&ip) {
            return ip;
        }
        nearest_known = ip;
    }
    nearest_known
}

/// An `X-Forwarded-For` entry: an address, or an address with a port (`203.0.113.7:4711`,
/// `[2001:db8::5]:4711`), as some proxies write them.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|address| address.ip()))
}

/// Extractor: the resolved client IP (unspecified when the server runs without connect info,
/// as in router-level tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        Ok(Self(resolve(
            peer,
            &parts.headers,
            &state.config.trusted_proxies,
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(forwarded: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", forwarded.parse().unwrap());
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        // Untrusted peer: its header is ignored.
        assert_eq!(
            resolve(
                "198.51.100.1".parse().unwrap(),
                &headers("1.2.3.4"),
                &trusted
            ),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // Trusted peer: the rightmost untrusted entry, even if the client forged a prefix.
        assert_eq!(
            resolve(
                "10.1.2.3".parse().unwrap(),
                &headers("6.6.6.6, 203.0.113.7, 10.9.9.9"),
                &trusted
            ),
            client
        );
        // IPv6 proxy, IPv6 client.
        assert_eq!(
            resolve("::1".parse().unwrap(), &headers("2001:db8::5"), &trusted),
            "2001:db8::5".parse::<IpAddr>().unwrap()
        );
        // Trusted peer, every entry trusted: the leftmost (the hop farthest from us we know).
        assert_eq!(
            resolve(
                "10.0.0.1".parse().unwrap(),
                &headers("10.2.2.2, 10.3.3.3"),
                &trusted
            ),
            "10.2.2.2".parse::<IpAddr>().unwrap()
        );
        // Trusted peer without the header: the peer.
        assert_eq!(
            resolve("10.0.0.1".parse().unwrap(), &HeaderMap::new(), &trusted),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn an_entry_that_is_not_an_address_never_lets_an_earlier_client_entry_win() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        // `unknown` right of the trusted hops: the client is unknown, the forged 6.6.6.6 is
        // not believed; the nearest known hop (the proxy that wrote `unknown`) is answered.
        assert_eq!(
            resolve(proxy, &headers("6.6.6.6, unknown, 10.9.9.9"), &trusted),
            "10.9.9.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            resolve(proxy, &headers("6.6.6.6, garbage"), &trusted),
            proxy
        );
        // An address with a port is that address.
        assert_eq!(
            resolve(proxy, &headers("6.6.6.6, 203.0.113.7:4711"), &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            resolve(
                proxy,
                &headers("6.6.6.6, [2001:db8::5]:4711, 10.9.9.9"),
                &trusted
            ),
            "2001:db8::5".parse::<IpAddr>().unwrap()
        );
        // An empty entry (a trailing comma) is not an address either.
        assert_eq!(resolve(proxy, &headers("6.6.6.6,"), &trusted), proxy);
    }
}
