//! The client's address: the TCP peer, or, behind a listed proxy, the rightmost
//! `X-Forwarded-For` entry that is not a listed proxy; and whether it is loopback.

use std::net::{IpAddr, SocketAddr};

/// True when the client address is loopback.
pub fn client_is_loopback(address: Option<IpAddr>) -> bool {
    address.is_some_and(|ip| ip.to_canonical().is_loopback())
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`[::1]:80`, `1.2.3.4:5`).
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(address) = entry.parse::<SocketAddr>() {
        return Some(address.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// The client's address. `peer` is the TCP peer and `forwarded` the `X-Forwarded-For`
/// values in the order they arrived. The header counts only when the peer is a trusted
/// proxy; then the client is the rightmost entry that is not a trusted proxy (the leftmost
/// when all are). An entry that is not an address makes the client unknown (`None`), which
/// is never loopback.
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded: &[&str],
    trusted_proxies: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|p| p.to_canonical() == *ip);
    if !trusted(&peer) {
        return Some(peer);
    }
    let entries: Vec<&str> = forwarded
        .iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return Some(peer);
    }
    for entry in entries.iter().rev() {
        let ip = forwarded_ip(entry)?;
        if !trusted(&ip) {
            return Some(ip);
        }
    }
    entries.first().and_then(|e| forwarded_ip(e))
}

#[cfg(test)]
mod tests {
    use super::super::tests::ip;
    use super::*;

    #[test]
    fn forwarded_for_counts_only_from_listed_proxies_rightmost_first() {
        let proxies = [ip("127.0.0.1"), ip("10.0.0.1")];
        let peer = Some(ip("127.0.0.1"));
        // Not from a proxy: the header is ignored.
        assert_eq!(
            client_address(Some(ip("192.0.2.7")), &["127.0.0.1"], &proxies),
            Some(ip("192.0.2.7"))
        );
        assert_eq!(client_address(peer, &["203.0.113.9"], &[]), peer);
        // From a proxy: the rightmost address that is no proxy.
        assert_eq!(
            client_address(peer, &["203.0.113.9"], &proxies),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_address(peer, &["127.0.0.2, 203.0.113.9, 10.0.0.1"], &proxies),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_address(peer, &["203.0.113.9", "198.51.100.4"], &proxies),
            Some(ip("198.51.100.4"))
        );
        assert_eq!(
            client_address(peer, &["[2001:db8::1]:443"], &proxies),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            client_address(peer, &["192.0.2.1:5000"], &proxies),
            Some(ip("192.0.2.1"))
        );
        // All proxies: the leftmost. No header: the proxy itself. Junk: unknown.
        assert_eq!(
            client_address(peer, &["10.0.0.1, 127.0.0.1"], &proxies),
            Some(ip("10.0.0.1"))
        );
        assert_eq!(client_address(peer, &[], &proxies), peer);
        assert_eq!(client_address(peer, &[" , "], &proxies), peer);
        assert_eq!(client_address(peer, &["unknown, 10.0.0.1"], &proxies), None);
        assert_eq!(client_address(None, &["203.0.113.9"], &proxies), None);
        // A mapped IPv4 peer is the same proxy.
        assert_eq!(
            client_address(Some(ip("::ffff:127.0.0.1")), &["203.0.113.9"], &proxies),
            Some(ip("203.0.113.9"))
        );
    }
}
