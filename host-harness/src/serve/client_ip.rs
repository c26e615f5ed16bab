//! Who is calling: the address `serve` passes to the component (in `x-mfa-client-ip`) and keys its
//! per-client limit on.
//!
//! Without `--trusted-proxy` it is the TCP peer, and `X-Forwarded-For` is ignored: anyone can write
//! that header. With trusted proxies (CIDRs), a request whose peer is one of them is attributed to
//! the **right-most untrusted hop** of `X-Forwarded-For`: each proxy appends the address it was
//! connected from, so the hops right of that one were written by proxies we trust, and everything
//! left of it by the client, who may have made it up.
//!
//! ```text
//!   X-Forwarded-For: 203.0.113.9, 198.51.100.4, 10.0.0.7      peer 10.0.0.2 (trusted)
//!                    ^ made up?   ^ the client   ^ trusted, skipped
//! ```
//!
//! What it defends against and how it fails:
//! - A peer that is not a trusted proxy never has its header read.
//! - Several `X-Forwarded-For` lines are one list, in order (RFC 9110 §5.3); spaces and empty
//!   elements are skipped; a hop may carry a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
//! - A hop that is not an address (`unknown`, garbage, non-ASCII) ends the walk: nothing left of it
//!   can be attributed, so the caller is the nearest address known, the trusted hop right of it (or
//!   the peer): as without a proxy setting, never an address a client chose.
//! - A chain that is trusted throughout gives its left-most hop (an internal caller through the
//!   proxy).
//! - IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are the IPv4 address they carry, for matching
//!   and in the answer.

use std::net::{IpAddr, SocketAddr};

use hyper::header::HeaderMap;
use ipnet::IpNet;

/// The header a proxy appends the address it was connected from to.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The proxies whose `X-Forwarded-For` is believed. Empty: the TCP peer is the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Proxies in `nets`.
    #[must_use]
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets.into_iter().map(|n| n.trunc()).collect())
    }

    /// Parses one `--trusted-proxy` value: a CIDR (`10.0.0.0/8`, `2001:db8::/32`) or one address.
    ///
    /// # Errors
    /// The text is neither; the message says what is expected.
    pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
        let text = text.trim();
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map(|net| match net {
                // `::ffff:10.0.0.0/104` is written by some as the IPv4 net it maps.
                IpNet::V6(v6) if v6.prefix_len() >= 96 => {
                    match (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
                        (Some(v4), Some(len)) => ipnet::Ipv4Net::new(v4, len)
                            .map(IpNet::V4)
                            .unwrap_or(IpNet::V6(v6)),
                        _ => IpNet::V6(v6),
                    }
                }
                other => other,
            })
            .map_err(|_| {
                format!(
                    "`{text}` is not a CIDR or an IP address (e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)"
                )
            })
    }

    /// Whether any proxy is trusted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` with `headers` (see the module doc).
    #[must_use]
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut nearest = peer;
        for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
            let Ok(line) = line.to_str() else {
                return nearest;
            };
            for hop in line.rsplit(',').map(str::trim).filter(|h| !h.is_empty()) {
                let Some(ip) = parse_hop(hop) else {
                    return nearest;
                };
                if !self.trusts(ip) {
                    return ip;
                }
                nearest = ip;
            }
        }
        nearest
    }
}

/// One `X-Forwarded-For` element: an address, with or without a port (and brackets for IPv6).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            hop.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            nets.iter()
                .map(|n| TrustedProxies::parse_cidr(n).unwrap())
                .collect(),
        )
    }

    fn headers(lines: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(X_FORWARDED_FOR, HeaderValue::from_bytes(line).unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn client(p: &TrustedProxies, peer: &str, lines: &[&[u8]]) -> String {
        p.client_ip(ip(peer), &headers(lines)).to_string()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() {
        let none = TrustedProxies::default();
        assert!(none.is_empty());
        assert_eq!(client(&none, "10.0.0.2", &[b"203.0.113.9"]), "10.0.0.2");
        assert_eq!(client(&none, "::ffff:192.0.2.1", &[]), "192.0.2.1");
        // A peer outside the trusted nets is not believed either.
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            client(&p, "198.51.100.4", &[b"203.0.113.9"]),
            "198.51.100.4"
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/8", "192.168.1.1"]);
        assert_eq!(
            client(&p, "10.0.0.2", &[b"203.0.113.9, 198.51.100.4, 10.0.0.7"]),
            "198.51.100.4"
        );
        // Spaces, none, and empty elements.
        assert_eq!(
            client(
                &p,
                "10.0.0.2",
                &[b"203.0.113.9,198.51.100.4 ,, 192.168.1.1 ,"]
            ),
            "198.51.100.4"
        );
        // No header from a trusted peer: the peer.
        assert_eq!(client(&p, "10.0.0.2", &[]), "10.0.0.2");
        assert_eq!(client(&p, "10.0.0.2", &[b"  "]), "10.0.0.2");
    }

    #[test]
    fn several_header_lines_are_one_list_in_order() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            client(&p, "10.0.0.2", &[b"203.0.113.9", b"198.51.100.4, 10.0.0.9"]),
            "198.51.100.4"
        );
        assert_eq!(
            client(&p, "10.0.0.2", &[b"203.0.113.9", b"10.1.1.1", b"10.0.0.9"]),
            "203.0.113.9"
        );
    }

    #[test]
    fn garbage_ends_the_walk_at_the_nearest_known_address() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            client(&p, "10.0.0.2", &[b"203.0.113.9, unknown, 10.0.0.7"]),
            "10.0.0.7"
        );
        assert_eq!(client(&p, "10.0.0.2", &[b"not-an-ip"]), "10.0.0.2");
        assert_eq!(client(&p, "10.0.0.2", &[b"1.2.3.4.5"]), "10.0.0.2");
        assert_eq!(client(&p, "10.0.0.2", &[b"203.0.113.9/24"]), "10.0.0.2");
        // Bytes that are not visible ASCII.
        assert_eq!(client(&p, "10.0.0.2", &[b"203.0.113.9, \xff"]), "10.0.0.2");
        // The garbage left of the client does not matter.
        assert_eq!(
            client(&p, "10.0.0.2", &[b"<script>, 198.51.100.4, 10.0.0.7"]),
            "198.51.100.4"
        );
    }

    #[test]
    fn an_all_trusted_chain_gives_its_left_most_hop() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&p, "10.0.0.2", &[b"10.9.9.9, 10.0.0.7"]), "10.9.9.9");
    }

    #[test]
    fn ipv6_hops_ports_and_mapped_addresses() {
        let p = proxies(&["2001:db8:ffff::/48", "10.0.0.0/8"]);
        assert_eq!(
            client(
                &p,
                "2001:db8:ffff::1",
                &[b"2001:db8:1::5, 2001:db8:ffff::2"]
            ),
            "2001:db8:1::5"
        );
        assert_eq!(
            client(&p, "2001:db8:ffff::1", &[b"[2001:db8:1::5]:4711"]),
            "2001:db8:1::5"
        );
        assert_eq!(
            client(&p, "2001:db8:ffff::1", &[b"[2001:db8:1::6]"]),
            "2001:db8:1::6"
        );
        assert_eq!(
            client(&p, "10.0.0.2", &[b"198.51.100.4:55012"]),
            "198.51.100.4"
        );
        // A mapped peer and a mapped hop match the IPv4 nets, and the answer is IPv4.
        assert_eq!(
            client(
                &p,
                "::ffff:10.0.0.2",
                &[b"::ffff:198.51.100.4, ::ffff:10.0.0.3"]
            ),
            "198.51.100.4"
        );
        // A mapped net given as such matches too.
        let mapped = proxies(&["::ffff:10.0.0.0/104"]);
        assert_eq!(
            client(&mapped, "10.0.0.2", &[b"198.51.100.4"]),
            "198.51.100.4"
        );
    }

    #[test]
    fn cidrs_parse_with_host_bits_and_as_bare_addresses_and_refuse_garbage() {
        assert_eq!(
            TrustedProxies::parse_cidr("10.1.2.3/8")
                .unwrap()
                .to_string(),
            "10.1.2.3/8"
        );
        let p = proxies(&["10.1.2.3/8"]);
        assert_eq!(client(&p, "10.200.0.1", &[b"198.51.100.4"]), "198.51.100.4");
        assert_eq!(
            TrustedProxies::parse_cidr("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            TrustedProxies::parse_cidr(" ::1 ").unwrap().to_string(),
            "::1/128"
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0",
            "example.com",
            "10.0.0.0/8/8",
            "::/129",
        ] {
            let e = TrustedProxies::parse_cidr(bad).unwrap_err();
            assert!(e.contains("not a CIDR"), "{bad}: {e}");
        }
    }
}
