//! The network section's newer knobs: what of the host a VPS may reach
//! (`deny_host`, `allow_host`) and which socket families it may open.
use serde::{Deserialize, Serialize};

/// What stays reachable on the host's own addresses under `deny_host`: a
/// port (TCP and UDP, as egress rules are) or `ping` (ICMP echo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PortOrName", into = "PortOrName")]
pub enum HostPort {
    Port(u16),
    Ping,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PortOrName {
    Port(u32),
    Name(String),
}

impl TryFrom<PortOrName> for HostPort {
    type Error = String;
    fn try_from(v: PortOrName) -> Result<Self, String> {
        match v {
            PortOrName::Port(p) => u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .map(Self::Port)
                .ok_or_else(|| format!("allow_host: port {p} is not 1 to 65535")),
            PortOrName::Name(n) if n == "ping" => Ok(Self::Ping),
            PortOrName::Name(n) => n
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .map(Self::Port)
                .ok_or_else(|| format!("allow_host: {n:?}: write a port (1 to 65535) or ping")),
        }
    }
}

impl From<HostPort> for PortOrName {
    fn from(p: HostPort) -> Self {
        match p {
            HostPort::Port(p) => Self::Port(u32::from(p)),
            HostPort::Ping => Self::Name("ping".into()),
        }
    }
}

impl HostPort {
    /// The port of its egress entry (`ksal_common::EGRESS_PORT_PING` for ping).
    pub fn egress_port(self) -> u32 {
        match self {
            Self::Port(p) => u32::from(p),
            Self::Ping => ksal_common::EGRESS_PORT_PING,
        }
    }
}

/// Socket family names (AF_*, linux/socket.h) by number.
pub const FAMILIES: [&str; 46] = [
    "unspec",
    "unix",
    "inet",
    "ax25",
    "ipx",
    "appletalk",
    "netrom",
    "bridge",
    "atmpvc",
    "x25",
    "inet6",
    "rose",
    "decnet",
    "netbeui",
    "security",
    "key",
    "netlink",
    "packet",
    "ash",
    "econet",
    "atmsvc",
    "rds",
    "sna",
    "irda",
    "pppox",
    "wanpipe",
    "llc",
    "ib",
    "mpls",
    "can",
    "tipc",
    "bluetooth",
    "iucv",
    "rxrpc",
    "isdn",
    "phonet",
    "ieee802154",
    "caif",
    "alg",
    "nfc",
    "vsock",
    "kcm",
    "qipcrtr",
    "smc",
    "xdp",
    "mctp",
];

/// A socket family a VPS may open: `inet` or `AF_INET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SocketFamily(pub u8);

impl TryFrom<String> for SocketFamily {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        let name = lower.strip_prefix("af_").unwrap_or(&lower);
        FAMILIES
            .iter()
            .position(|f| *f == name)
            .filter(|n| *n != 0)
            .map(|n| Self(n as u8))
            .ok_or_else(|| {
                format!(
                    "socket family {s:?}: use a name of linux/socket.h without AF_, e.g. unix, \
                     inet, inet6, netlink"
                )
            })
    }
}

impl From<SocketFamily> for String {
    fn from(f: SocketFamily) -> Self {
        FAMILIES[usize::from(f.0)].to_owned()
    }
}

/// The allowed families as a bit mask (bit n = AF n).
pub fn family_mask(families: &[SocketFamily]) -> u64 {
    families.iter().fold(0, |m, f| m | (1u64 << f.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families(yaml: &str) -> Result<Vec<SocketFamily>, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    #[test]
    fn families_are_named_as_in_socket_h_with_or_without_af() {
        let f = families("[unix, AF_INET, inet6, netlink, vsock]").unwrap();
        assert_eq!(
            f.iter().map(|f| f.0).collect::<Vec<_>>(),
            [1, 2, 10, 16, 40]
        );
        assert_eq!(
            family_mask(&f),
            (1 << 1) | (1 << 2) | (1 << 10) | (1 << 16) | (1 << 40)
        );
        assert_eq!(String::from(f[1]), "inet");
        for bad in ["[unspec]", "[inet4]", "[\"\"]"] {
            let e = families(bad).unwrap_err().to_string();
            assert!(e.contains("linux/socket.h"), "{bad}: {e}");
        }
    }

    #[test]
    fn host_ports_are_ports_or_ping() {
        let p: Vec<HostPort> = serde_yaml::from_str("[53, \"8080\", ping]").unwrap();
        assert_eq!(
            p,
            [HostPort::Port(53), HostPort::Port(8080), HostPort::Ping]
        );
        assert_eq!(p[2].egress_port(), ksal_common::EGRESS_PORT_PING);
        assert_eq!(p[0].egress_port(), 53);
        for bad in ["[0]", "[70000]", "[pong]"] {
            let e = serde_yaml::from_str::<Vec<HostPort>>(bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("allow_host") || e.contains("did not match"),
                "{bad}: {e}"
            );
        }
    }
}
