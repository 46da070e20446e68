//! The client's IP address, trusted-proxy aware: `X-Forwarded-For` is believed only when the
//! peer is a configured trusted proxy, and then read from the right, skipping the trusted
//! proxies' own entries — the first untrusted address is the client. A client can prepend
//! anything it likes to the header, so the leftmost entry is never trusted blindly.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

use crate::AppState;

pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|network| network.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|item| item.trim().parse::<IpAddr>().ok())
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(forwarded.first())
        .copied()
        .unwrap_or(peer)
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
        // Trusted peer without the header: the peer.
        assert_eq!(
            resolve("10.0.0.1".parse().unwrap(), &HeaderMap::new(), &trusted),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
