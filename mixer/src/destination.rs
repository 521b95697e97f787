//! Where a room may push its program. Pure: addresses come resolved from the caller (serve's
//! API when an output is added, [`crate::connect_check`] each time the mixer (re)connects).
//!
//! Why: an output URL makes the mixer open a TCP connection wherever it says, and the room
//! status reports how that went, so an unchecked URL turns the server into a port scanner of
//! its own network (`127.0.0.1:6379`, the cloud metadata service at `169.254.169.254`, `10.x`).
//! Destinations on loopback, link-local, private, shared (CGNAT), multicast, broadcast or
//! unspecified addresses are refused unless the operator allows private destinations or names
//! the host in an allow-list (as Jibri's RTMP allow-list does).
//!
//! Why twice: a name that resolved to a public address when the output was added may resolve
//! to `127.0.0.1` when the mixer connects, or on a reconnect hours later (DNS rebinding). So
//! the mixer judges the addresses again before every connection attempt.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// What the operator allows beyond public addresses (`[outputs]` in serve's config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationPolicy {
    /// Any address, private ones included (a deployment pushing inside its own network).
    #[serde(default)]
    pub allow_private: bool,
    /// Hosts allowed whatever they resolve to: `live.example.com`, `*.example.com`, or an
    /// address literal.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
}

/// What checking one output URL at connect time takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectTarget {
    /// Nothing to check: private destinations are allowed, or the host is on the allow-list.
    Allowed,
    /// Decided without a lookup: the host is an address literal, or the URL is unusable.
    Decided(Result<(), String>),
    /// Resolve `host` (the URL's port, for the resolver's benefit) and judge the addresses
    /// with [`DestinationPolicy::judge_resolved`].
    Resolve { host: String, port: u16 },
}

impl DestinationPolicy {
    /// No restriction (in-process mixers of tests and tools).
    pub fn unrestricted() -> Self {
        Self {
            allow_private: true,
            allow_hosts: Vec::new(),
        }
    }

    /// Whether `host` (as written in the URL) is on the allow-list. `*.example.com` matches
    /// subdomains only.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow_hosts.iter().any(|pattern| {
            let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
                None => host == pattern,
            }
        })
    }

    /// Checks `host` and the addresses it resolved to; the message names the first refused
    /// address and what it is.
    pub fn check(&self, host: &str, addresses: &[IpAddr]) -> Result<(), String> {
        match self.first_refused(host, addresses) {
            Some((ip, class)) => Err(format!("the host resolves to {ip} ({class}); {REMEDY}")),
            None => Ok(()),
        }
    }

    /// What the connect-time check of `url` needs. The host is taken as GStreamer's
    /// `rtmp2sink` will use it; an IPv4 literal in an `rtmp://` URL parses as a name (the
    /// scheme is not special to the URL parser) and is recognised here.
    pub fn connect_target(&self, url: &str) -> ConnectTarget {
        if self.allow_private {
            return ConnectTarget::Allowed;
        }
        let parsed = match url::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(e) => return ConnectTarget::Decided(Err(format!("not a URL ({e})"))),
        };
        let host = match parsed.host() {
            Some(url::Host::Domain(name)) => name.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return ConnectTarget::Decided(Err("the URL has no host".into())),
        };
        if self.host_allowed(&host) {
            return ConnectTarget::Allowed;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return ConnectTarget::Decided(self.judge_resolved(&host, Ok(vec![ip])));
        }
        let default_port = if parsed.scheme() == "rtmps" {
            443
        } else {
            1935
        };
        ConnectTarget::Resolve {
            port: parsed.port().unwrap_or(default_port),
            host,
        }
    }

    /// The connect-time verdict on what `host` resolves to now (`Err`: the lookup failed).
    /// A host that does not resolve is refused as well: connecting would resolve it again and
    /// could get anything.
    pub fn judge_resolved(
        &self,
        host: &str,
        lookup: Result<Vec<IpAddr>, String>,
    ) -> Result<(), String> {
        if self.allow_private || self.host_allowed(host) {
            return Ok(());
        }
        let addresses = match lookup {
            Ok(addresses) if !addresses.is_empty() => addresses,
            Ok(_) => return Err("refused at connect time: the host resolves to nothing".into()),
            Err(e) => {
                return Err(format!(
                    "refused at connect time: the host does not resolve ({e})"
                ))
            }
        };
        match self.first_refused(host, &addresses) {
            Some((ip, class)) => Err(format!(
                "refused at connect time: the host now resolves to {ip} ({class}); {REMEDY}"
            )),
            None => Ok(()),
        }
    }

    fn first_refused(&self, host: &str, addresses: &[IpAddr]) -> Option<(IpAddr, &'static str)> {
        if self.allow_private || self.host_allowed(host) {
            return None;
        }
        addresses
            .iter()
            .find_map(|ip| non_public(*ip).map(|class| (*ip, class)))
    }
}

/// What the operator can do about a refusal (the keys of serve's `[outputs]`).
const REMEDY: &str = "pushing to private networks is refused unless the server allows it \
                      ([outputs] allow_private = true, or the host in [outputs] allow)";

/// What kind of non-public address `ip` is, if it is one.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => {
            // IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses reach IPv4
            // hosts: judge the IPv4 address inside.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public_v4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return non_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            non_public_v6(v6)
        }
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified / this network")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared address space (CGNAT)")
    } else if a == 198 && (18..20).contains(&b) {
        Some("benchmarking (private)")
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        Some("IETF protocol assignments")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() || a >= 240 {
        Some("reserved / broadcast")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique local (private)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xffc0 == 0xfec0 {
        Some("site-local (private)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_named_and_public_ones_pass() {
        for (addr, class) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.5.4", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("0.0.0.0", "unspecified / this network"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved / broadcast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique local (private)"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("ff02::1", "multicast"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("198.18.0.1", "benchmarking (private)"),
            ("192.0.0.8", "IETF protocol assignments"),
        ] {
            assert_eq!(non_public(ip(addr)), Some(class), "{addr}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "100.128.0.1", "2001:4860:4860::8888"] {
            assert_eq!(non_public(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn the_policy_refuses_internal_destinations_unless_allowed() {
        let strict = DestinationPolicy::default();
        let err = strict
            .check("redis.internal", &[ip("8.8.8.8"), ip("127.0.0.1")])
            .unwrap_err();
        assert!(
            err.contains("127.0.0.1 (loopback)") && err.contains("allow_private"),
            "{err}"
        );
        assert_eq!(strict.check("cdn.example", &[ip("203.0.113.9")]), Ok(()));
        let open = DestinationPolicy {
            allow_private: true,
            ..DestinationPolicy::default()
        };
        assert_eq!(open.check("localhost", &[ip("127.0.0.1")]), Ok(()));
        let listed = DestinationPolicy {
            allow_private: false,
            allow_hosts: vec!["*.ingest.example".into(), "10.0.0.7".into()],
        };
        assert_eq!(listed.check("eu.ingest.example", &[ip("10.1.1.1")]), Ok(()));
        assert_eq!(listed.check("10.0.0.7", &[ip("10.0.0.7")]), Ok(()));
        assert!(listed.check("ingest.example", &[ip("10.1.1.1")]).is_err());
        assert!(listed
            .check("evil-ingest.example", &[ip("10.1.1.1")])
            .is_err());
        assert!(listed.check("10.0.0.8", &[ip("10.0.0.8")]).is_err());
    }

    #[test]
    fn connect_targets_say_what_to_resolve_and_decide_literals_at_once() {
        let strict = DestinationPolicy {
            allow_private: false,
            allow_hosts: vec!["*.ingest.example".into()],
        };
        assert_eq!(
            strict.connect_target("rtmp://live.cdn.example/app/key"),
            ConnectTarget::Resolve {
                host: "live.cdn.example".into(),
                port: 1935
            }
        );
        assert_eq!(
            strict.connect_target("rtmps://live.cdn.example:4443/app/key"),
            ConnectTarget::Resolve {
                host: "live.cdn.example".into(),
                port: 4443
            }
        );
        assert_eq!(
            strict.connect_target("rtmps://live.cdn.example/app/key"),
            ConnectTarget::Resolve {
                host: "live.cdn.example".into(),
                port: 443
            }
        );
        assert_eq!(
            strict.connect_target("rtmp://eu.ingest.example/app/key"),
            ConnectTarget::Allowed
        );
        // An IPv4 literal is a "domain" to the URL parser for rtmp://; judged without a lookup.
        let ConnectTarget::Decided(Err(err)) =
            strict.connect_target("rtmp://169.254.169.254/app/key")
        else {
            panic!("a link-local literal is refused at once");
        };
        assert!(err.contains("169.254.169.254 (link-local)"), "{err}");
        assert!(matches!(
            strict.connect_target("rtmp://[::1]:1935/app/key"),
            ConnectTarget::Decided(Err(_))
        ));
        assert_eq!(
            strict.connect_target("rtmp://203.0.113.9/app/key"),
            ConnectTarget::Decided(Ok(()))
        );
        assert!(matches!(
            strict.connect_target("not a url"),
            ConnectTarget::Decided(Err(_))
        ));
        assert_eq!(
            DestinationPolicy::unrestricted().connect_target("rtmp://localhost/app/key"),
            ConnectTarget::Allowed
        );
    }

    #[test]
    fn a_name_rebound_to_an_internal_address_is_refused_at_connect_time() {
        let strict = DestinationPolicy::default();
        let err = strict
            .judge_resolved("cdn.example", Ok(vec![ip("127.0.0.1")]))
            .unwrap_err();
        assert!(
            err.contains("the host now resolves to 127.0.0.1 (loopback)")
                && err.contains("[outputs] allow_private"),
            "{err}"
        );
        let err = strict
            .judge_resolved(
                "cdn.example",
                Ok(vec![ip("203.0.113.9"), ip("169.254.169.254")]),
            )
            .unwrap_err();
        assert!(err.contains("169.254.169.254 (link-local)"), "{err}");
        assert_eq!(
            strict.judge_resolved("cdn.example", Ok(vec![ip("203.0.113.9")])),
            Ok(())
        );
        let err = strict
            .judge_resolved("cdn.example", Err("Name or service not known".into()))
            .unwrap_err();
        assert!(
            err.contains("does not resolve (Name or service not known)"),
            "{err}"
        );
        assert!(strict.judge_resolved("cdn.example", Ok(vec![])).is_err());
        let listed = DestinationPolicy {
            allow_private: false,
            allow_hosts: vec!["rtmp.lan".into()],
        };
        assert_eq!(
            listed.judge_resolved("rtmp.lan", Ok(vec![ip("10.0.0.5")])),
            Ok(())
        );
    }

    #[test]
    fn the_policy_crosses_the_wire_and_defaults_to_strict() {
        let policy = DestinationPolicy {
            allow_private: false,
            allow_hosts: vec!["*.example.com".into()],
        };
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(
            json,
            r#"{"allow_private":false,"allow_hosts":["*.example.com"]}"#
        );
        assert_eq!(
            serde_json::from_str::<DestinationPolicy>(&json).unwrap(),
            policy
        );
        assert_eq!(
            serde_json::from_str::<DestinationPolicy>("{}").unwrap(),
            DestinationPolicy::default()
        );
        assert!(!DestinationPolicy::default().allow_private);
    }
}
