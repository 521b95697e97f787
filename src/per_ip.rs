//! Open connections per client address, for the listeners' per-address caps (HTTP and the
//! RTMP origin).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The unit a per-client bound applies to: an IPv4 address, or an IPv6 /64 (one client usually
/// holds a whole /64, and would otherwise count as many clients).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let net = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(net))
            }
        },
    }
}

/// Open connections per client address.
#[derive(Clone, Default)]
pub struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection's place in [`PerIp`]; freed on drop.
pub struct Slot {
    map: PerIp,
    ip: IpAddr,
}

impl PerIp {
    pub fn take(&self, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let open = map.entry(ip).or_default();
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(Slot {
            map: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.map.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = map.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_slots_are_capped_and_freed() {
        let per_ip = PerIp::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = per_ip.take(ip, 2).unwrap();
        let _b = per_ip.take(ip, 2).unwrap();
        assert!(per_ip.take(ip, 2).is_none());
        assert!(per_ip.take("10.0.0.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(per_ip.take(ip, 2).is_some());
    }
}
