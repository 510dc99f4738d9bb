//! The bounded set of API server addresses a container declared, and its byte encoding
//! for host state. Pure code, unit-tested natively.

use std::net::{IpAddr, Ipv6Addr};

/// How many distinct addresses are kept per container; later ones beyond it are ignored
/// so a process cannot push the real address out by declaring many fakes.
pub const MAX_ADDRESSES: usize = 8;

/// Parses an address as written in the environment: dotted IPv4, any IPv6 form, or an
/// IPv6 literal in brackets. Host names are not addresses and give `None`.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    text.parse::<IpAddr>().ok().map(canonical)
}

/// One form per address: IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// A small insertion-ordered set of canonical addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AddressSet {
    addresses: Vec<IpAddr>,
}

impl AddressSet {
    /// Adds `ip`; false when already present or the set is full.
    pub fn insert(&mut self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.addresses.contains(&ip) || self.addresses.len() >= MAX_ADDRESSES {
            return false;
        }
        self.addresses.push(ip);
        true
    }

    /// Whether `ip` (in any form) is in the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.addresses.contains(&canonical(ip))
    }

    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// 16 bytes per address: IPv4 as its IPv4-mapped IPv6 form.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.addresses.len() * 16);
        for ip in &self.addresses {
            let v6 = match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => *v6,
            };
            bytes.extend_from_slice(&v6.octets());
        }
        bytes
    }

    /// Inverse of [`AddressSet::encode`]; trailing partial bytes are ignored.
    pub fn decode(bytes: &[u8]) -> AddressSet {
        let mut set = AddressSet::default();
        for octets in bytes.as_chunks::<16>().0 {
            set.insert(IpAddr::V6(Ipv6Addr::from(*octets)));
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn mapped_ipv6_equals_ipv4() {
        let mut set = AddressSet::default();
        set.insert(ip("10.96.0.1"));
        assert!(set.contains(ip("::ffff:10.96.0.1")));
        assert!(!set.contains(ip("10.96.0.2")));
    }

    #[test]
    fn ipv6_forms_compare_canonically() {
        let mut set = AddressSet::default();
        set.insert(parse_ip("fd00:0:0:0:0:0:0:1").unwrap());
        assert!(set.contains(ip("fd00::1")));
        assert_eq!(parse_ip("[fd00::1]"), Some(ip("fd00::1")));
    }

    #[test]
    fn host_names_are_not_addresses() {
        assert_eq!(parse_ip("kubernetes.default.svc"), None);
        assert_eq!(parse_ip(""), None);
    }

    #[test]
    fn bounded_and_first_kept() {
        let mut set = AddressSet::default();
        for i in 0..20u8 {
            set.insert(IpAddr::from([10, 0, 0, i]));
        }
        assert_eq!(set.len(), MAX_ADDRESSES);
        assert!(set.contains(ip("10.0.0.0")));
        assert!(!set.contains(ip("10.0.0.19")));
    }

    #[test]
    fn encoding_round_trips() {
        let mut set = AddressSet::default();
        set.insert(ip("10.96.0.1"));
        set.insert(ip("fd00::1"));
        assert_eq!(AddressSet::decode(&set.encode()), set);
        assert!(AddressSet::decode(&[1, 2, 3]).is_empty());
    }
}
