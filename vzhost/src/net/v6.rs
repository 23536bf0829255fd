//! The VPSs' IPv6 prefix: given with `--subnet6`, else a ULA /64
//! (fd00::/8 and 40 random bits, RFC 4193) chosen once per host and kept
//! in the state directory. Its first address (`::1`) is the gateway.
use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    path::Path,
    str::FromStr as _,
};

use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::{
        address::{AddressAttribute, AddressFlags},
        neighbour::NeighbourFlags,
    },
};
use serde::{Deserialize, Serialize};

use super::{AddrError, LinkError, NetMode, link::nl};
use crate::model::parse_cidr;

/// An IPv6 prefix: its network address and length (48 to 120).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix6 {
    pub net: Ipv6Addr,
    pub len: u8,
}

impl Prefix6 {
    pub fn parse(field: &'static str, s: &str) -> Result<Self, AddrError> {
        let (addr, len): (Ipv6Addr, u8) =
            parse_cidr(field, s, "IPv6", "fd12:3456:789a:1::/64", 48..=120)?;
        let mask = u128::MAX << (128 - len);
        Ok(Self {
            net: Ipv6Addr::from(u128::from(addr) & mask),
            len,
        })
    }

    /// A ULA /64 from 40 random bits.
    pub fn random_ula() -> Self {
        let mut b = [0u8; 16];
        getrandom_fill(&mut b[1..6]);
        b[0] = 0xfd;
        Self {
            net: Ipv6Addr::from(b),
            len: 64,
        }
    }

    fn mask(self) -> u128 {
        u128::MAX << (128 - self.len)
    }

    pub fn contains(self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.net)
    }

    /// The host's address in the prefix.
    pub fn gateway(self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.net) + 1)
    }

    /// Check a requested address: inside the prefix, not the network or
    /// gateway address, not another VPS's.
    pub fn check(
        self,
        requested: &str,
        used: &[(String, Ipv6Addr)],
    ) -> Result<Ipv6Addr, AddrError> {
        let bad = |why: String| AddrError::Invalid {
            field: "ip6",
            value: requested.to_owned(),
            why,
        };
        let ip = Ipv6Addr::from_str(requested)
            .map_err(|_| bad("not an IPv6 address (give it without a prefix)".into()))?;
        if !self.contains(ip) {
            return Err(bad(format!(
                "it is outside the VPS IPv6 prefix {self}; choose an address in it, or leave \
                 --ip6 out for the next free one"
            )));
        }
        if ip == self.net || ip == self.gateway() {
            return Err(bad(format!(
                "{ip} is the prefix's network or gateway address"
            )));
        }
        if let Some((owner, _)) = used.iter().find(|(_, a)| *a == ip) {
            return Err(AddrError::InUse {
                addr: ip.into(),
                owner: owner.clone(),
            });
        }
        Ok(ip)
    }

    /// The lowest free address after the gateway.
    pub fn allocate(self, used: &[(String, Ipv6Addr)]) -> Result<Ipv6Addr, AddrError> {
        let first = u128::from(self.gateway()) + 1;
        let last = u128::from(self.net) | !self.mask();
        // A scan of the used set, not of the (huge) prefix.
        let mut taken: Vec<u128> = used.iter().map(|(_, a)| u128::from(*a)).collect();
        taken.sort_unstable();
        let mut next = first;
        for t in taken {
            if t == next {
                next += 1;
            } else if t > next {
                break;
            }
        }
        (next <= last)
            .then(|| Ipv6Addr::from(next))
            .ok_or_else(|| AddrError::Exhausted(self.to_string()))
    }
}

fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read as _;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom")
        && f.read_exact(buf).is_ok()
    {
        return;
    }
    // No urandom: the clock's nanoseconds, still unlikely to collide.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (t >> (8 * i)) as u8;
    }
}

impl fmt::Display for Prefix6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

impl TryFrom<String> for Prefix6 {
    type Error = AddrError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse("subnet6", &s)
    }
}

impl From<Prefix6> for String {
    fn from(p: Prefix6) -> Self {
        p.to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Prefix6Error {
    #[error("IPv6 prefix file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "IPv6 prefix file {path}: {source}; remove it (a new ULA /64 is chosen) or write a prefix into it"
    )]
    Parse { path: String, source: AddrError },
}

/// Where a state directory keeps its VPSs' IPv6 prefix.
pub fn prefix6_file(root: &Path) -> std::path::PathBuf {
    root.join("subnet6")
}

/// The prefix a daemon runs with: the one asked for, else the one stored,
/// else a new ULA /64; stored for the next daemon.
pub fn resolve_prefix6(root: &Path, requested: Option<Prefix6>) -> Result<Prefix6, Prefix6Error> {
    let path = prefix6_file(root);
    let shown = || path.display().to_string();
    let stored =
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(Prefix6::parse("subnet6", text.trim()).map_err(|source| {
                Prefix6Error::Parse {
                    path: shown(),
                    source,
                }
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(Prefix6Error::Io {
                    path: shown(),
                    source,
                });
            }
        };
    let prefix = requested.or(stored).unwrap_or_else(Prefix6::random_ula);
    if stored != Some(prefix) {
        std::fs::write(&path, format!("{prefix}\n")).map_err(|source| Prefix6Error::Io {
            path: shown(),
            source,
        })?;
    }
    Ok(prefix)
}

/// Add `ip`/`len` to link `index` usable at once (no duplicate address
/// detection: the daemon hands each address to one VPS only).
pub(super) async fn add_nodad(
    h: &Handle,
    index: u32,
    ip: Ipv6Addr,
    len: u8,
) -> std::result::Result<(), rtnetlink::Error> {
    let mut req = h.address().add(index, IpAddr::V6(ip), len);
    req.message_mut()
        .attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    req.execute().await
}

/// Write `value` to /proc/sys/net/ipv6/conf/`path` of this network
/// namespace.
pub(super) fn sysctl(path: &str, value: &str) -> Result<(), LinkError> {
    let file = format!("/proc/sys/net/ipv6/conf/{path}");
    std::fs::write(&file, value).map_err(|e| LinkError::Netlink {
        what: format!("write {value} to {file}"),
        why: e.to_string(),
    })
}

/// Routed: a /128 route to the VPS's `ip` through its host veth, and
/// proxy NDP there for the gateway address (the VPS's only neighbour:
/// it reaches everything else through it), answered at once.
pub(super) async fn route_to(
    h: &Handle,
    prefix: Prefix6,
    index: u32,
    veth: &str,
    ip: Ipv6Addr,
) -> Result<(), LinkError> {
    sysctl(&format!("{veth}/forwarding"), "1")?;
    sysctl(&format!("{veth}/proxy_ndp"), "1")?;
    let delay = format!("/proc/sys/net/ipv6/neigh/{veth}/proxy_delay");
    std::fs::write(&delay, "0").map_err(|e| LinkError::Netlink {
        what: format!("write 0 to {delay}"),
        why: e.to_string(),
    })?;
    let gateway = prefix.gateway();
    h.neighbours()
        .add(index, IpAddr::V6(gateway))
        .flags(NeighbourFlags::Proxy)
        .replace()
        .execute()
        .await
        .map_err(nl(format!("proxy NDP for {gateway} on {veth}")))?;
    h.route()
        .add(
            RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(ip, 128)
                .output_interface(index)
                .pref_source(gateway)
                .build(),
        )
        .replace()
        .execute()
        .await
        .map_err(nl(format!("route {ip}/128 through {veth}")))
}

/// Inside the VPS: `ip` on eth0 (index `index`) and a default route via
/// the gateway. Bridged, the prefix is on the link; routed, the address
/// is alone (/128) and the gateway reached on-link, so every packet goes
/// through the host.
pub(super) async fn configure_eth0(
    h: &Handle,
    index: u32,
    ip: Ipv6Addr,
    prefix: Prefix6,
    mode: NetMode,
) -> Result<(), LinkError> {
    let len = match mode {
        NetMode::Bridged => prefix.len,
        NetMode::Routed => 128,
    };
    add_nodad(h, index, ip, len)
        .await
        .map_err(nl(format!("add {ip}/{len} to eth0")))?;
    let gateway = prefix.gateway();
    let mut route = RouteMessageBuilder::<Ipv6Addr>::new()
        .gateway(gateway)
        .output_interface(index);
    if mode == NetMode::Routed {
        route = route.onlink();
    }
    h.route()
        .add(route.build())
        .execute()
        .await
        .map_err(nl(format!("default IPv6 route via {gateway}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Prefix6 {
        Prefix6::parse("subnet6", "fd00:1:2:3::/64").unwrap()
    }

    #[test]
    fn allocation_skips_the_gateway_and_used_addresses() {
        let used = vec![("a".to_owned(), "fd00:1:2:3::2".parse().unwrap())];
        assert_eq!(p().gateway().to_string(), "fd00:1:2:3::1");
        assert_eq!(p().allocate(&used).unwrap().to_string(), "fd00:1:2:3::3");
        assert_eq!(p().allocate(&[]).unwrap().to_string(), "fd00:1:2:3::2");
    }

    #[test]
    fn requested_addresses_are_checked_naming_the_field_and_fix() {
        let used = vec![("a".to_owned(), "fd00:1:2:3::2".parse().unwrap())];
        assert!(p().check("fd00:1:2:3::9", &used).is_ok());
        let e = p().check("fd00:9::5", &used).unwrap_err().to_string();
        assert!(
            e.contains("ip6") && e.contains("outside") && e.contains("--ip6"),
            "{e}"
        );
        assert!(matches!(
            p().check("fd00:1:2:3::2", &used),
            Err(AddrError::InUse { .. })
        ));
        assert!(p().check("fd00:1:2:3::1", &used).is_err());
        assert!(p().check("10.0.0.1", &used).is_err());
    }

    #[test]
    fn a_ula_is_chosen_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = resolve_prefix6(dir.path(), None).unwrap();
        assert_eq!(first.net.octets()[0], 0xfd);
        assert_eq!(first.len, 64);
        assert_eq!(resolve_prefix6(dir.path(), None).unwrap(), first);
        let asked = p();
        assert_eq!(resolve_prefix6(dir.path(), Some(asked)).unwrap(), asked);
        assert_eq!(resolve_prefix6(dir.path(), None).unwrap(), asked);
    }
}
