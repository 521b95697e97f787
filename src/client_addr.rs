//! The client address of an HTTP request behind trusted reverse proxies (`[server]
//! trusted_proxies`), for the per-client rate limits. Pure: the listener passes the TCP peer and
//! the `X-Forwarded-For` header in.
//!
//! The standard right-to-left walk: each proxy appends the address it received the request
//! from, so the entries a client wrote itself are on the left and cannot be told from real
//! ones. Starting at the TCP peer, while the hop is a trusted proxy, step one entry to the left;
//! the first address that is not a trusted proxy is the client. A malformed entry stops the
//! walk at the last trusted hop (the client is then that proxy, the safe direction). The header
//! is never read when the TCP peer itself is not trusted: anyone can send it.

use std::net::IpAddr;

use ipnet::IpNet;

/// Entries (malformed ones included) walked from the right before giving up, the last address
/// reached being the answer: a proxy chain is a handful of hops, and a header of a million
/// entries costs no more than one of sixteen.
const MAX_HOPS: usize = 16;
/// Longer entries are malformed (the longest address with a port, `[v6%zone]:port`, is ~60).
const MAX_ENTRY_BYTES: usize = 64;

/// Networks whose connections are reverse proxies that set `X-Forwarded-For`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// An entry of `trusted_proxies` that is neither a CIDR nor an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry:?} is not a network such as 10.0.0.0/8 or an address such as 127.0.0.1")]
pub struct BadProxyEntry {
    pub entry: String,
}

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`, `fd00::/8`) and single addresses (`127.0.0.1`).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, BadProxyEntry> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref().trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| BadProxyEntry {
                        entry: entry.to_string(),
                    })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address for a request from TCP peer `peer` carrying `forwarded_for` (the
    /// `X-Forwarded-For` header values, in order). `peer` unless it is a trusted proxy.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        // Several header lines form one list, in order: walk them from the last, each from
        // its right end (lazily: the bytes left of the last MAX_HOPS entries are not looked at).
        let lines: Vec<&[u8]> = forwarded_for.into_iter().collect();
        let entries = lines
            .iter()
            .rev()
            .flat_map(|line| line.rsplit(|&b| b == b','))
            .take(MAX_HOPS);
        let mut client = peer;
        for entry in entries {
            // A malformed entry (garbage, `unknown`, empty) ends the walk at the last trusted
            // hop: skipping it would trust whatever a client wrote to its left.
            let Some(ip) = parse_entry(entry) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// An address as proxies write it: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`, with a port
/// (`1.2.3.4:5678`, `[2001:db8::1]:5678`) tolerated.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    if entry.len() > MAX_ENTRY_BYTES {
        return None;
    }
    let entry = std::str::from_utf8(entry).ok()?.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|addr| canonical(addr.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
                .map(canonical)
        })
}

/// An IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4 peer) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(entries).unwrap()
    }

    fn client(proxies: &TrustedProxies, peer: &str, headers: &[&str]) -> IpAddr {
        proxies.client_ip(ip(peer), headers.iter().map(|h| h.as_bytes()))
    }

    #[test]
    fn the_header_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let none = TrustedProxies::default();
        assert_eq!(
            client(&none, "203.0.113.5", &["198.51.100.1"]),
            ip("203.0.113.5")
        );
        let proxies = trusted(&["10.0.0.0/8"]);
        // A client writing the header itself, straight to the server: spoofing gains nothing.
        assert_eq!(
            client(&proxies, "203.0.113.5", &["198.51.100.1"]),
            ip("203.0.113.5")
        );
        assert_eq!(
            client(&proxies, "10.1.2.3", &["198.51.100.1"]),
            ip("198.51.100.1")
        );
        // Trusted peer, no header: the proxy is all we know.
        assert_eq!(client(&proxies, "10.1.2.3", &[]), ip("10.1.2.3"));
    }

    #[test]
    fn a_chain_of_proxies_is_walked_from_the_right_past_trusted_hops_only() {
        let proxies = trusted(&["10.0.0.0/8", "127.0.0.1", "2001:db8:ffff::/48"]);
        // client -> CDN edge (10.9.9.9) -> local proxy (127.0.0.1) -> serve; the client spoofed
        // an entry on the left, which is not reached.
        assert_eq!(
            client(&proxies, "127.0.0.1", &["6.6.6.6, 198.51.100.7, 10.9.9.9"]),
            ip("198.51.100.7")
        );
        // The same list split over two header lines.
        assert_eq!(
            client(
                &proxies,
                "127.0.0.1",
                &["6.6.6.6, 198.51.100.7", "10.9.9.9"]
            ),
            ip("198.51.100.7")
        );
        // IPv6, bracketed with a port, and an IPv4-mapped peer.
        assert_eq!(
            client(
                &proxies,
                "::ffff:10.0.0.1",
                &["[2001:db8::5]:443, 2001:db8:ffff::1"]
            ),
            ip("2001:db8::5")
        );
        // Every hop trusted: the left-most one reached.
        assert_eq!(
            client(&proxies, "10.0.0.1", &["10.0.0.2, 10.0.0.3"]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn garbage_and_huge_headers_do_not_break_the_walk() {
        let proxies = trusted(&["10.0.0.0/8"]);
        // Garbage where a proxy's entry should be: the client is the last trusted hop, never
        // what lies left of the garbage.
        assert_eq!(
            client(&proxies, "10.0.0.1", &["198.51.100.7, unknown"]),
            ip("10.0.0.1")
        );
        assert_eq!(
            client(&proxies, "10.0.0.1", &["198.51.100.7, 10.0.0.2, not-an-ip"]),
            ip("10.0.0.1")
        );
        assert_eq!(
            client(
                &proxies,
                "10.0.0.1",
                &["6.6.6.6, garbage, 198.51.100.7, 10.0.0.2"]
            ),
            ip("198.51.100.7")
        );
        assert_eq!(client(&proxies, "10.0.0.1", &[""]), ip("10.0.0.1"));
        let bytes: &[u8] = b"198.51.100.7, \xff\xfe";
        assert_eq!(proxies.client_ip(ip("10.0.0.1"), [bytes]), ip("10.0.0.1"));
        let long_entry = format!("198.51.100.7, {}", "1".repeat(100));
        assert_eq!(client(&proxies, "10.0.0.1", &[&long_entry]), ip("10.0.0.1"));
        // Many trusted hops: the walk stops after 16 entries, at the last address it reached;
        // the client left of them is not reached.
        let long = format!("198.51.100.7,{}", vec!["10.0.0.9"; 200_000].join(","));
        assert_eq!(client(&proxies, "10.0.0.1", &[&long]), ip("10.0.0.9"));
        let commas = format!("198.51.100.7{}", ",".repeat(100));
        assert_eq!(client(&proxies, "10.0.0.1", &[&commas]), ip("10.0.0.1"));
        // Within the bound, the client is found.
        let chain = format!("198.51.100.7,{}", vec!["10.0.0.9"; 15].join(","));
        assert_eq!(client(&proxies, "10.0.0.1", &[&chain]), ip("198.51.100.7"));
    }

    #[test]
    fn entries_parse_as_networks_or_addresses() {
        let proxies = trusted(&["10.0.0.0/8", " 127.0.0.1 ", "fd00::/8", "192.168.1.7/24"]);
        assert!(proxies.trusts(ip("10.255.0.1")));
        assert!(proxies.trusts(ip("127.0.0.1")));
        assert!(!proxies.trusts(ip("127.0.0.2")));
        assert!(proxies.trusts(ip("fd12::1")));
        assert!(proxies.trusts(ip("192.168.1.200")));
        let err = TrustedProxies::parse(&["10.0.0.0/33"]).unwrap_err();
        assert_eq!(err.entry, "10.0.0.0/33");
        assert!(TrustedProxies::parse(&["proxy.example.com"]).is_err());
        assert!(TrustedProxies::parse::<&str>(&[]).unwrap().is_empty());
    }
}
