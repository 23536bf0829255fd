//! VPS networking: a host bridge with the gateway address (the VPSs are
//! plugged into it, or in routed mode routed to), a veth pair per
//! VPS with its peer as `eth0` inside the VPS, addresses and routes set
//! through rtnetlink. IPv4 and IPv6.
mod fence;
mod host;
mod link;
mod mode;
mod nat;
mod v6;

use std::{net::Ipv4Addr, str::FromStr as _};

use serde::{Deserialize, Serialize};

pub use fence::fence;
pub use host::host_networks;
pub use link::{BRIDGE_MAX_PORTS, LinkError, attach_vps, detach_vps, ensure_bridge, veth_index};
pub use mode::{ModeError, NetMode, UnknownMode, mode_file, resolve as resolve_mode, stored_mode};
pub use nat::{NatError, set_nat};
pub use v6::{Prefix6, Prefix6Error, prefix6_file, resolve_prefix6};

pub use crate::model::{AddrError, Subnet};

/// The host side of VPS networking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// The bridge holding the gateway address (with no ports in routed
    /// mode).
    pub bridge: String,
    /// The VPS subnet; its first address is the gateway on that link.
    pub subnet: Subnet,
    /// The start of the daemon's identity, in every interface name it
    /// makes, so two daemons sharing a network namespace never take each
    /// other's veths for their own (empty until the daemon sets it).
    #[serde(default)]
    pub tag: String,
    #[serde(default)]
    pub mode: NetMode,
    /// The VPSs' IPv6 prefix (none until the daemon resolves it).
    #[serde(default)]
    pub subnet6: Option<Prefix6>,
}

pub const DEFAULT_BRIDGE: &str = "vzbr0";
pub const DEFAULT_SUBNET: &str = "10.213.0.0/16";

impl NetConfig {
    pub fn new(bridge: &str, subnet: &str) -> Result<Self, AddrError> {
        let ok = !bridge.is_empty()
            && bridge.len() < 16
            && bridge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(AddrError::Invalid {
                field: "bridge",
                value: bridge.to_owned(),
                why: "use 1 to 15 letters, digits, '-' or '_'".into(),
            });
        }
        let mut subnet = Subnet::parse("subnet", subnet)?;
        subnet.addr = subnet.network();
        Ok(Self {
            bridge: bridge.to_owned(),
            subnet,
            tag: String::new(),
            mode: NetMode::default(),
            subnet6: None,
        })
    }

    /// Check a requested address: inside the subnet, a host address that is
    /// not the gateway, and not used by another VPS.
    pub fn check(&self, requested: &str, used: &[(String, Ipv4Addr)]) -> Result<Subnet, AddrError> {
        let want = if requested.contains('/') {
            Subnet::parse("ip", requested)?
        } else {
            let addr = Ipv4Addr::from_str(requested).map_err(|_| AddrError::Invalid {
                field: "ip",
                value: requested.to_owned(),
                why: "not an IPv4 address".into(),
            })?;
            self.subnet.with(addr)
        };
        let bad = |why: String| AddrError::Invalid {
            field: "ip",
            value: requested.to_owned(),
            why,
        };
        if want.prefix != self.subnet.prefix || !self.subnet.contains(want.addr) {
            return Err(bad(format!("it is outside the VPS subnet {}", self.subnet)));
        }
        let ip = want.addr;
        if ip == self.subnet.network()
            || ip == self.subnet.broadcast()
            || ip == self.subnet.gateway()
        {
            return Err(bad(format!(
                "{ip} is the subnet's network, broadcast or gateway address"
            )));
        }
        if let Some((owner, _)) = used.iter().find(|(_, a)| *a == ip) {
            return Err(AddrError::InUse {
                addr: ip.into(),
                owner: owner.clone(),
            });
        }
        Ok(want)
    }

    /// The lowest free host address after the gateway.
    pub fn allocate(&self, used: &[(String, Ipv4Addr)]) -> Result<Subnet, AddrError> {
        let first = u32::from(self.subnet.gateway()) + 1;
        let last = u32::from(self.subnet.broadcast());
        (first..last)
            .map(Ipv4Addr::from)
            .find(|ip| !used.iter().any(|(_, a)| a == ip))
            .map(|ip| self.subnet.with(ip))
            .ok_or_else(|| AddrError::Exhausted(self.subnet.to_string()))
    }
}

/// Hex digits of the daemon identity kept in interface names: with "vz"
/// and a VPS number of up to 8 hex digits, at most 15 bytes (IFNAMSIZ).
pub const TAG_LEN: usize = 5;

impl NetConfig {
    /// This config with the daemon identity `id` as its interface tag.
    pub fn tagged(mut self, id: &crate::model::DaemonId) -> Self {
        self.tag = id.as_str().chars().take(TAG_LEN).collect();
        self
    }

    /// This config with the VPSs' IPv6 prefix `prefix`.
    pub fn with_subnet6(mut self, prefix: Prefix6) -> Self {
        self.subnet6 = Some(prefix);
        self
    }

    /// This config in network mode `mode`.
    pub fn with_mode(mut self, mode: NetMode) -> Self {
        self.mode = mode;
        self
    }

    /// Host-side veth name of VPS number `id`.
    pub fn host_veth(&self, id: u32) -> String {
        format!("vz{}{id:x}", self.tag)
    }
}

/// The MAC address of VPS number `id`'s eth0: locally administered,
/// unicast, unique per id.
pub fn vps_mac(id: u32) -> [u8; 6] {
    let b = id.to_be_bytes();
    [0x02, 0x76, b[0], b[1], b[2], b[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NetConfig {
        NetConfig::new("vzbr0", "10.213.0.0/24").unwrap()
    }

    #[test]
    fn subnet_math() {
        let s = Subnet::parse("subnet", "10.213.7.9/16").unwrap();
        assert_eq!(s.network(), Ipv4Addr::new(10, 213, 0, 0));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 213, 255, 255));
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 213, 0, 1));
        assert!(s.contains(Ipv4Addr::new(10, 213, 200, 1)));
        assert!(!s.contains(Ipv4Addr::new(10, 214, 0, 1)));
        assert_eq!(s.to_string(), "10.213.7.9/16");
    }

    #[test]
    fn malformed_cidrs_name_the_field() {
        for bad in [
            "10.0.0.1",
            "10.0.0.300/24",
            "10.0.0.1/33",
            "x/24",
            "10.0.0.1/4",
        ] {
            let e = Subnet::parse("ip", bad).unwrap_err().to_string();
            assert!(e.contains("ip") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn allocation_skips_used_and_gateway() {
        let c = cfg();
        let used = vec![("a".to_owned(), Ipv4Addr::new(10, 213, 0, 2))];
        assert_eq!(
            c.allocate(&used).unwrap().addr,
            Ipv4Addr::new(10, 213, 0, 3)
        );
        assert_eq!(c.allocate(&[]).unwrap().to_string(), "10.213.0.2/24");
    }

    #[test]
    fn requested_addresses_are_checked() {
        let c = cfg();
        let used = vec![("a".to_owned(), Ipv4Addr::new(10, 213, 0, 2))];
        assert_eq!(
            c.check("10.213.0.9/24", &used).unwrap().addr,
            Ipv4Addr::new(10, 213, 0, 9)
        );
        assert_eq!(c.check("10.213.0.9", &used).unwrap().prefix, 24);
        assert!(matches!(
            c.check("10.213.0.2/24", &used),
            Err(AddrError::InUse { .. })
        ));
        for bad in [
            "10.99.0.5/24",
            "10.213.0.1/24",
            "10.213.0.255/24",
            "10.213.0.5/16",
        ] {
            let e = c.check(bad, &used).unwrap_err().to_string();
            assert!(e.contains("ip"), "{bad}: {e}");
        }
        assert!(NetConfig::new("not a bridge name!", "10.0.0.0/8").is_err());
        let cfg = NetConfig::new("vzbr0", "10.213.0.0/16")
            .expect("valid")
            .tagged(&crate::model::DaemonId::of_root(std::path::Path::new(
                "/var/lib/vzhost",
            )));
        assert_eq!(cfg.tag.len(), TAG_LEN);
        let longest = cfg.host_veth(u32::MAX);
        assert!(longest.len() <= 15, "{longest}");
        let other = NetConfig::new("vzbr0", "10.213.0.0/16")
            .expect("valid")
            .tagged(&crate::model::DaemonId::of_root(std::path::Path::new(
                "/srv/vz",
            )));
        assert_ne!(
            cfg.host_veth(1),
            other.host_veth(1),
            "two daemons, two names"
        );
    }

    #[test]
    fn vps_macs_are_local_unicast_and_distinct() {
        let (a, b) = (vps_mac(1), vps_mac(256));
        assert_eq!(a[0] & 0x03, 0x02, "locally administered, not multicast");
        assert_ne!(a, b);
        assert_eq!(a, vps_mac(1));
    }
}
