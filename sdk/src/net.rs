//! The world's IP types and `std::net`, both ways.

use crate::{IpAddress, SocketAddress};
use std::net::IpAddr;

/// A world address as a `std` one.
#[inline]
pub fn to_std(ip: IpAddress) -> IpAddr {
    match ip {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::from([a, b, c, d]),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => IpAddr::from([a, b, c, d, e, f, g, h]),
    }
}

/// A `std` address as a world one (for a finding's `Value::Ip`).
#[inline]
pub fn from_std(ip: IpAddr) -> IpAddress {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            IpAddress::Ipv4((a, b, c, d))
        }
        IpAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.segments();
            IpAddress::Ipv6((a, b, c, d, e, f, g, h))
        }
    }
}

/// The IP and port a socket address names; `None` for AF_UNIX and other families.
#[inline]
pub fn socket_ip_port(address: &SocketAddress) -> Option<(IpAddr, u16)> {
    match *address {
        SocketAddress::Ipv4(a) => Some((to_std(IpAddress::Ipv4(a.address)), a.port)),
        SocketAddress::Ipv6(a) => Some((to_std(IpAddress::Ipv6(a.address)), a.port)),
        SocketAddress::Unix | SocketAddress::Other(_) => None,
    }
}
