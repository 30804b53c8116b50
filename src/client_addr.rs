//! The client's address, for the budgets of callers without an identity of their own (anonymous sockets and
//! sessions count per address, never as one shared user). It is the TCP peer, unless the peer is one of
//! `http.trusted_proxies`: then it is the first hop of `X-Forwarded-For`, read from the right, that is not a
//! trusted proxy (the hops a client wrote itself, further left, are never believed).

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};
use ipnet::IpNet;

/// One `http.trusted_proxies` entry: an address (`10.0.0.7`) or a network (`10.0.0.0/8`).
pub(crate) fn parse_proxy(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry.parse::<IpNet>().ok().or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The peer the listener recorded for a request (none when the router is served by something else).
pub(crate) fn peer(extensions: &Extensions) -> Option<SocketAddr> {
    extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// `http.trusted_proxies` as networks (entries that do not parse were refused at boot).
pub(crate) fn parse_proxies(entries: &[String]) -> Vec<IpNet> {
    entries.iter().filter_map(|t| parse_proxy(t)).collect()
}

/// The client address of a request from `peer`: see the module docs.
pub(crate) fn client_address(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    Some(through_proxies(peer?.ip(), headers, trusted))
}

fn through_proxies(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return canonical(peer);
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => client = ip,
            Ok(ip) => return canonical(ip),
            // An unreadable hop: nothing left of it can be believed; the last trusted hop answers for it.
            Err(_) => break,
        }
    }
    canonical(client)
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let trusted = parse_proxies(&["10.0.0.0/8".to_string(), "192.168.1.1".to_string()]);
        // No trusted peer: the header is the client's own words, never read.
        assert_eq!(through_proxies(ip("203.0.113.9"), &xff(&["1.2.3.4"]), &trusted), ip("203.0.113.9"));
        // Through the proxy: the hop it appended.
        assert_eq!(through_proxies(ip("10.1.2.3"), &xff(&["1.2.3.4, 198.51.100.7"]), &trusted), ip("198.51.100.7"));
        // Two trusted proxies in a row, the header split over two lines.
        assert_eq!(
            through_proxies(ip("10.1.2.3"), &xff(&["6.6.6.6, 198.51.100.7", "192.168.1.1"]), &trusted),
            ip("198.51.100.7")
        );
        // A trusted peer with no header: the peer itself.
        assert_eq!(through_proxies(ip("10.1.2.3"), &HeaderMap::new(), &trusted), ip("10.1.2.3"));
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(through_proxies(ip("10.1.2.3"), &xff(&["1.2.3.4, nonsense"]), &trusted), ip("10.1.2.3"));
        // An IPv4-mapped peer is its IPv4 address.
        assert_eq!(through_proxies(ip("::ffff:203.0.113.9"), &HeaderMap::new(), &[]), ip("203.0.113.9"));
        assert!(parse_proxy("10.0.0.0/8").is_some() && parse_proxy("::1").is_some() && parse_proxy("x").is_none());
    }
}
