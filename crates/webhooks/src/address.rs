//! Deliveries go to the internet, not into the relay's own network: a target that resolves
//! to a loopback, private, link-local or otherwise special address is refused, at every
//! connection (a name that resolves elsewhere later cannot slip past a check made once),
//! unless the endpoint's setting allows it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether an endpoint may be reached at private addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Public addresses only (the default).
    PublicOnly,
    /// Any address: an endpoint inside the deployment (compose's receiver).
    AllowPrivate,
}

/// Why `ip` is not a public internet address, if it is not.
pub fn refused_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => refused_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => refused_v4(v4),
            None => refused_v6(ip),
        },
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 || a >= 240 {
        Some("not a unicast host")
    } else if ip.is_documentation() || (a == 198 && (b == 18 || b == 19)) || (a == 192 && b == 0) {
        Some("reserved")
    } else {
        None
    }
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some("not a unicast host")
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        Some("reserved")
    } else if first == 0x0064 && ip.segments()[1] == 0xff9b {
        // NAT64: the IPv4 address inside decides.
        let [.., c, d] = ip.segments();
        let [c1, c2] = c.to_be_bytes();
        let [d1, d2] = d.to_be_bytes();
        refused_v4(Ipv4Addr::new(c1, c2, d1, d2))
    } else {
        None
    }
}

/// A DNS resolver for delivery clients: the system's, with every refused address dropped;
/// a name left with none fails to resolve, naming why.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| refused_address(a.ip()).is_none())
                .collect();
            if public.is_empty() {
                let why = found
                    .first()
                    .and_then(|a| refused_address(a.ip()))
                    .unwrap_or("no address");
                return Err(format!(
                    "`{host}` resolves to no public address ({why}); allow private addresses for this endpoint if it is meant to be inside the deployment"
                )
                .into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_refused_and_public_ones_pass() {
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.18.0.5", "private (compose's network)"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("fd00::1", "unique local"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
            ("64:ff9b::a9fe:a9fe", "NAT64 of link-local"),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(refused_address(ip).is_some(), "{ip}: {why}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(refused_address(ip), None, "{ip} is public");
        }
    }

    #[tokio::test]
    async fn a_name_that_resolves_only_to_loopback_does_not_resolve() {
        let name: Name = "localhost".parse().unwrap();
        let error = GuardedResolver.resolve(name).await.err().unwrap();
        assert!(error.to_string().contains("no public address"), "{error}");
    }
}
