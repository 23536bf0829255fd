//! What an administrator asks for: VPS names, sizes, limits, id ranges and
//! the spec kept in each VPS's config.json. Parsing only, no I/O.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error(
        "invalid VPS name {0:?}: use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit"
    )]
    Name(String),
    #[error("invalid {field} {value:?}: {why}")]
    Field {
        field: &'static str,
        value: String,
        why: String,
    },
}

impl SpecError {
    pub fn kind(&self) -> super::ErrorKind {
        match self {
            Self::Name(_) | Self::Field { .. } => super::ErrorKind::Invalid,
        }
    }
}

/// A validated VPS name: `[a-z0-9][a-z0-9-]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    pub fn new(name: &str) -> Result<Self, SpecError> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .enumerate()
                .all(|(i, b)| b.is_ascii_lowercase() || b.is_ascii_digit() || (b == b'-' && i > 0));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(SpecError::Name(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = SpecError;
    fn try_from(s: String) -> Result<Self, SpecError> {
        Self::new(&s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parse a size like `512M`, `1G`, `1.5G`, `4096` (bytes; K/M/G/T are
/// powers of 1024, an optional trailing `B` or `iB` is accepted).
pub fn parse_size(field: &'static str, value: &str) -> Result<u64, SpecError> {
    let bad = |why: &str| SpecError::Field {
        field,
        value: value.to_owned(),
        why: why.to_owned(),
    };
    let v = value.trim();
    let v = v
        .strip_suffix("iB")
        .or_else(|| v.strip_suffix('B'))
        .unwrap_or(v);
    let (num, mult) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => {
                    return Err(bad(
                        "use a number with an optional K, M, G or T suffix, e.g. 512M",
                    ));
                }
            };
            (&v[..i], mult)
        }
        _ => (v, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| bad("use a number with an optional K, M, G or T suffix, e.g. 512M"))?;
    if !n.is_finite() || n <= 0.0 {
        return Err(bad("must be greater than zero"));
    }
    let bytes = n * mult as f64;
    if bytes > u64::MAX as f64 {
        return Err(bad("too large"));
    }
    Ok(bytes as u64)
}

/// Resource limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// CPU quota in CPUs (1.5 = one and a half CPUs' time).
    pub cpus: Option<f64>,
    /// Maximum number of tasks.
    pub pids: Option<u64>,
    /// Bytes the VPS may write to its own layer.
    pub disk: Option<u64>,
}

impl Limits {
    /// Overlay the limits given in `other` onto these.
    pub fn merge(&mut self, other: &Limits) {
        self.memory = other.memory.or(self.memory);
        self.cpus = other.cpus.or(self.cpus);
        self.pids = other.pids.or(self.pids);
        self.disk = other.disk.or(self.disk);
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(d) = self.disk
            && d < MIN_DISK
        {
            return Err(SpecError::Field {
                field: "disk",
                value: d.to_string(),
                why: "must be at least 16M".into(),
            });
        }
        if let Some(c) = self.cpus
            && !(c > 0.0 && c <= 4096.0)
        {
            return Err(SpecError::Field {
                field: "cpus",
                value: c.to_string(),
                why: "must be a number of CPUs above 0, e.g. 0.5 or 2".into(),
            });
        }
        if self.pids == Some(0) {
            return Err(SpecError::Field {
                field: "pids",
                value: "0".into(),
                why: "must be at least 1".into(),
            });
        }
        if let Some(m) = self.memory
            && m < 4 << 20
        {
            return Err(SpecError::Field {
                field: "memory",
                value: m.to_string(),
                why: "must be at least 4M".into(),
            });
        }
        Ok(())
    }
}

/// The smallest disk limit (an ext4 image needs room for its journal).
pub const MIN_DISK: u64 = 16 << 20;

/// The user namespace mapping: VPS ids 0..count map to host ids base..
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub base: u32,
    pub count: u32,
}

impl IdMap {
    pub fn overlaps(&self, other: &IdMap) -> bool {
        self.base < other.base + other.count && other.base < self.base + self.count
    }
}

/// What an administrator asked for when creating a VPS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub name: Name,
    pub template: super::TemplateName,
    pub hostname: String,
    pub limits: Limits,
    pub idmap: IdMap,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds between SIGTERM and SIGKILL on stop.
    pub stop_timeout: u64,
    /// Numeric VPS id (used by KSAL maps), unique on this host.
    pub id: u32,
    /// How its disk limit is enforced, if it has one.
    #[serde(default)]
    pub disk: Option<super::DiskBackend>,
    /// Its address on the host bridge.
    #[serde(default)]
    pub ip: Option<super::Subnet>,
    /// Its IPv6 address in the daemon's prefix.
    #[serde(default)]
    pub ip6: Option<std::net::Ipv6Addr>,
    /// The policy named at create, if any (else its selectors decide).
    #[serde(default)]
    pub policy: Option<String>,
}

/// Default host id range for VPS user namespaces: 65536 ids per VPS from
/// host uid 1000000 up, away from ordinary users.
pub const IDMAP_FIRST: u32 = 1_000_000;
pub const IDMAP_SIZE: u32 = 65_536;

pub fn validate_hostname(h: &str) -> Result<(), SpecError> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(SpecError::Field {
            field: "hostname",
            value: h.to_owned(),
            why: "use letters, digits, '-' and '.', at most 64 characters".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "web1", "0", "a-b", &"a".repeat(63)] {
            assert!(Name::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "Web",
            "-a",
            "a_b",
            "a.b",
            "a/b",
            &"a".repeat(64),
            "é",
        ] {
            assert_eq!(
                Name::new(bad),
                Err(SpecError::Name(bad.to_owned())),
                "{bad}"
            );
        }
        let msg = Name::new("Web").unwrap_err().to_string();
        assert!(msg.contains("a-z, 0-9"), "{msg}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("memory", "4096"), Ok(4096));
        assert_eq!(parse_size("memory", "512M"), Ok(512 << 20));
        assert_eq!(parse_size("memory", "1G"), Ok(1 << 30));
        assert_eq!(parse_size("memory", "1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("memory", "1.5k"), Ok(1536));
        assert_eq!(parse_size("disk", "2GB"), Ok(2 << 30));
        for bad in ["12QB", "", "M", "-1G", "0", "abc", "1e400"] {
            let e = parse_size("memory", bad).unwrap_err().to_string();
            assert!(e.contains("memory") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn limits_merge_and_validate() {
        let mut l = Limits {
            memory: Some(64 << 20),
            pids: Some(10),
            ..Default::default()
        };
        l.merge(&Limits {
            pids: Some(20),
            cpus: Some(0.5),
            ..Default::default()
        });
        assert_eq!(
            (l.memory, l.pids, l.cpus),
            (Some(64 << 20), Some(20), Some(0.5))
        );
        assert!(l.validate().is_ok());
        l.cpus = Some(0.0);
        assert!(l.validate().unwrap_err().to_string().contains("cpus"));
    }

    #[test]
    fn idmaps_overlap() {
        let a = IdMap {
            base: 100,
            count: 10,
        };
        assert!(a.overlaps(&IdMap {
            base: 109,
            count: 5
        }));
        assert!(!a.overlaps(&IdMap {
            base: 110,
            count: 5
        }));
        assert!(!a.overlaps(&IdMap {
            base: 0,
            count: 100
        }));
    }

    #[test]
    fn hostnames() {
        assert!(validate_hostname("web-1.example").is_ok());
        assert!(validate_hostname("bad_host").is_err());
        assert!(validate_hostname("").is_err());
    }
}
