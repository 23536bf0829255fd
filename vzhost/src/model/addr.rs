//! IPv4 addresses with their prefix, as VPS specs and the network config
//! carry them.
use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error("invalid {field} {value:?}: {why}")]
    Invalid {
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("address {addr} is already used by VPS {owner}")]
    InUse {
        addr: std::net::IpAddr,
        owner: String,
    },
    #[error("no free address left in {0}")]
    Exhausted(String),
}

impl AddrError {
    pub fn kind(&self) -> super::ErrorKind {
        match self {
            Self::Invalid { .. } => super::ErrorKind::Invalid,
            Self::InUse { .. } | Self::Exhausted(_) => super::ErrorKind::Conflict,
        }
    }
}

/// An IPv4 network: address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// `s` as ADDRESS/PREFIX, the prefix within `lengths`; errors name
/// `field` and show `example`.
pub fn parse_cidr<A: FromStr>(
    field: &'static str,
    s: &str,
    family: &str,
    example: &str,
    lengths: std::ops::RangeInclusive<u8>,
) -> Result<(A, u8), AddrError> {
    let bad = |why: String| AddrError::Invalid {
        field,
        value: s.to_owned(),
        why,
    };
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| bad(format!("use ADDRESS/PREFIX, e.g. {example}")))?;
    let addr = A::from_str(a).map_err(|_| bad(format!("not an {family} address")))?;
    let (low, high) = (lengths.start(), lengths.end());
    let prefix: u8 = p
        .parse()
        .map_err(|_| bad(format!("the prefix must be a number from {low} to {high}")))?;
    if !lengths.contains(&prefix) {
        return Err(bad(format!("the prefix must be from {low} to {high}")));
    }
    Ok((addr, prefix))
}

impl Subnet {
    pub fn parse(field: &'static str, s: &str) -> Result<Self, AddrError> {
        let (addr, prefix) = parse_cidr(field, s, "IPv4", "10.213.0.5/16", 8..=30)?;
        Ok(Self { addr, prefix })
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// The first host address: the gateway on the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + 1)
    }

    /// `ip` with this subnet's prefix.
    pub fn with(&self, ip: Ipv4Addr) -> Subnet {
        Subnet {
            addr: ip,
            prefix: self.prefix,
        }
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl TryFrom<String> for Subnet {
    type Error = AddrError;
    fn try_from(s: String) -> Result<Self, AddrError> {
        Self::parse("address", &s)
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}
