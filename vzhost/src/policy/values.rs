//! The values a policy's fields hold, each checked while it is parsed so
//! an error names its file, line and column: paths, networks, filesystem
//! types, capabilities, device rules, sysctl names and sizes.
use serde::{Deserialize, Serialize};

/// An absolute path, as the VPS sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VpsPath(String);

impl TryFrom<String> for VpsPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!(
                "path {s:?} is not absolute: write it as the VPS sees it, from /"
            ));
        }
        if s.split('/').any(|c| c == "..") {
            return Err(format!("path {s:?} has a '..' component: write it without"));
        }
        if s.contains('\0') {
            return Err("a path cannot hold a NUL byte".into());
        }
        Ok(Self(s))
    }
}

impl From<VpsPath> for String {
    fn from(p: VpsPath) -> Self {
        p.0
    }
}

impl VpsPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An IPv4 network in a rule: ADDRESS/PREFIX (0 to 32), or one ADDRESS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    pub addr: std::net::Ipv4Addr,
    pub prefix: u8,
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').unwrap_or((&s, "32"));
        let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| {
            format!("{s:?} is not an IPv4 network: write e.g. 10.0.0.0/8 or 192.0.2.1")
        })?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to 32"))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let net = std::net::Ipv4Addr::from(u32::from(addr) & mask);
        if net != addr {
            return Err(format!(
                "{s:?} has host bits set: did you mean {net}/{prefix}?"
            ));
        }
        Ok(Self { addr, prefix })
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> Self {
        format!("{}/{}", c.addr, c.prefix)
    }
}

/// A filesystem type name, as `mount -t` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FsType(String);

impl TryFrom<String> for FsType {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() < ksal_common::FSTYPE_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(Self(s))
        } else {
            Err(format!(
                "filesystem type {s:?}: use a name as in /proc/filesystems, up to {} characters",
                ksal_common::FSTYPE_LEN - 1
            ))
        }
    }
}

impl From<FsType> for String {
    fn from(t: FsType) -> Self {
        t.0
    }
}

impl FsType {
    pub fn key(&self) -> [u8; ksal_common::FSTYPE_LEN] {
        let mut k = [0; ksal_common::FSTYPE_LEN];
        k[..self.0.len()].copy_from_slice(self.0.as_bytes());
        k
    }
}

/// A capability name, CAP_NET_ADMIN or net_admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Capability(pub u8);

/// Capability names by number (linux/capability.h).
pub const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

impl TryFrom<String> for Capability {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let upper = s.to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        CAPABILITIES
            .iter()
            .position(|c| *c == bare)
            .map(|i| Self(i as u8))
            .ok_or_else(|| {
                format!(
                    "unknown capability {s:?}: use a name like CAP_NET_ADMIN (see capabilities(7))"
                )
            })
    }
}

impl From<Capability> for String {
    fn from(c: Capability) -> Self {
        format!("CAP_{}", CAPABILITIES[usize::from(c.0)])
    }
}

/// A device rule as in LXC's `devices.allow`: `c 1:3 rwm`, `c 136:* rw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceRule {
    pub block: bool,
    pub major: u32,
    /// None: every minor.
    pub minor: Option<u32>,
    /// `ksal_common::device_access` bits.
    pub access: u32,
}

impl TryFrom<String> for DeviceRule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = |why: &str| format!("device rule {s:?}: {why}; write it like \"c 1:3 rwm\"");
        let mut parts = s.split_whitespace();
        let (Some(kind), Some(numbers), Some(access), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("three fields are needed: type, major:minor, access"));
        };
        let block = match kind {
            "c" => false,
            "b" => true,
            _ => {
                return Err(bad(
                    "the type is c or b (leave the devices section out to allow every device)",
                ));
            }
        };
        let (major, minor) = numbers
            .split_once(':')
            .ok_or_else(|| bad("major and minor are separated by ':'"))?;
        let major = major.parse().map_err(|_| bad("the major is a number"))?;
        let minor = match minor {
            "*" => None,
            m => Some(m.parse().map_err(|_| bad("the minor is a number or *"))?),
        };
        let mut bits = 0;
        for c in access.chars() {
            bits |= match c {
                'r' => ksal_common::device_access::READ,
                'w' => ksal_common::device_access::WRITE,
                'm' => ksal_common::device_access::MKNOD,
                _ => return Err(bad("access is made of r, w and m")),
            };
        }
        Ok(Self {
            block,
            major,
            minor,
            access: bits,
        })
    }
}

impl From<DeviceRule> for String {
    fn from(r: DeviceRule) -> Self {
        let access: String = [
            (ksal_common::device_access::READ, 'r'),
            (ksal_common::device_access::WRITE, 'w'),
            (ksal_common::device_access::MKNOD, 'm'),
        ]
        .iter()
        .filter(|(b, _)| r.access & b != 0)
        .map(|(_, c)| *c)
        .collect();
        let minor = r.minor.map_or("*".to_owned(), |m| m.to_string());
        format!(
            "{} {}:{minor} {access}",
            if r.block { 'b' } else { 'c' },
            r.major
        )
    }
}

impl DeviceRule {
    /// Its key in `KSAL_DEVICE_ALLOW` (the VPS id is filled in later).
    pub fn key(&self) -> ksal_common::DeviceKey {
        ksal_common::DeviceKey {
            vps_id: 0,
            kind: if self.block { 1 } else { 2 },
            major: self.major,
            minor: self.minor.unwrap_or(ksal_common::ANY_MINOR),
        }
    }
}

/// A sysctl name, `net.ipv4.ip_forward` (or `net/ipv4/ip_forward`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SysctlName(String);

impl TryFrom<String> for SysctlName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let path = s.replace('.', "/");
        let ok = !path.is_empty()
            && path.len() < ksal_common::SYSCTL_NAME_LEN
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-/".contains(&b));
        if ok {
            Ok(Self(s))
        } else {
            Err(format!(
                "sysctl {s:?}: use a name as sysctl(8) shows it, e.g. net.ipv4.ip_forward, up to {} characters",
                ksal_common::SYSCTL_NAME_LEN - 1
            ))
        }
    }
}

impl From<SysctlName> for String {
    fn from(n: SysctlName) -> Self {
        n.0
    }
}

impl SysctlName {
    /// Its path under /proc/sys, NUL-padded, as the kernel names it.
    pub fn key(&self) -> [u8; ksal_common::SYSCTL_NAME_LEN] {
        let path = self.0.replace('.', "/");
        let mut k = [0; ksal_common::SYSCTL_NAME_LEN];
        k[..path.len()].copy_from_slice(path.as_bytes());
        k
    }
}

/// A byte size written as in the CLI: 512M, 1G.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Size(pub u64);

impl TryFrom<String> for Size {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        crate::model::parse_size("size", &s)
            .map(Size)
            .map_err(|e| e.to_string())
    }
}

impl From<Size> for String {
    fn from(s: Size) -> Self {
        s.0.to_string()
    }
}
