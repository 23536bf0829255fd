//! KSAL policies: YAML files an administrator drops into the policies
//! directory. Every value is checked while it is parsed, so a bad file is
//! refused with `file:line:column: reason` and never half-applied.
mod network;
pub mod watch;

use std::{collections::BTreeMap, fmt, path::Path, str::FromStr};

use ksal_common::{HOOKS, SECTIONS, Section, SectionDef, guard_rule};
use serde::{Deserialize, Serialize};

use crate::model::Limits;

pub use network::{FAMILIES, HostPort, SocketFamily, family_mask};

/// The policy every VPS gets when no other selects it.
pub const DEFAULT_NAME: &str = "default";
/// The shipped `policies/default.yaml`, in force when the directory has none.
pub const BUILTIN_DEFAULT: &str = include_str!("../../../policies/default.yaml");
pub const DEFAULT_DIR: &str = "/etc/vzhost/policies.d";

/// A policy file that could not be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{file}:{line}:{column}: {reason}")]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny and record.
    #[default]
    Enforce,
    /// Allow and record.
    Audit,
}

impl Mode {
    pub fn kernel(self) -> u32 {
        match self {
            Self::Enforce => ksal_common::mode::ENFORCE,
            Self::Audit => ksal_common::mode::AUDIT,
        }
    }
}

/// Which VPSs a policy is for: any listed name, or all the labels given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Selector {
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.names.iter().any(|n| n == name)
            || (!self.labels.is_empty()
                && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

fn both() -> Vec<Access> {
    vec![Access::Read, Access::Write]
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    pub path: VpsPath,
    /// What is denied: read, write, or both (the default).
    #[serde(default = "both")]
    pub access: Vec<Access>,
}

impl FileRule {
    pub fn access_bits(&self) -> u32 {
        self.access.iter().fold(0, |bits, a| {
            bits | match a {
                Access::Read => ksal_common::access::READ,
                Access::Write => ksal_common::access::WRITE,
            }
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Files {
    /// Files a VPS may not open (for the access given).
    #[serde(default)]
    pub deny: Vec<FileRule>,
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

/// A destination a VPS may not connect or send to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressRule {
    pub cidr: Cidr,
    /// 0 or absent: every port.
    #[serde(default)]
    pub port: u16,
}

/// Egress rules, refusing a repeated network and port: the repeat would
/// take the first one's place in the kernel, and its name in events.
fn distinct_egress<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<EgressRule>, D::Error> {
    let rules = Vec::<EgressRule>::deserialize(d)?;
    for (i, rule) in rules.iter().enumerate() {
        if let Some(first) = rules[..i].iter().position(|r| r == rule) {
            let port = match rule.port {
                0 => "every port".to_owned(),
                p => format!("port {p}"),
            };
            return Err(serde::de::Error::custom(format!(
                "deny_egress[{i}] ({}, {port}) repeats deny_egress[{first}]: list each network \
                 and port once",
                String::from(rule.cidr)
            )));
        }
    }
    Ok(rules)
}

/// Allow or deny one kind of action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permit {
    #[default]
    Allow,
    Deny,
}

impl Permit {
    fn denied(self) -> bool {
        self == Self::Deny
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Each network and port once (several ports of one network are
    /// several rules).
    #[serde(default, deserialize_with = "distinct_egress")]
    pub deny_egress: Vec<EgressRule>,
    /// Raw IPv4/IPv6 sockets (SOCK_RAW).
    #[serde(default)]
    pub raw_sockets: Permit,
    /// Packet sockets (AF_PACKET).
    #[serde(default)]
    pub packet_sockets: Permit,
    /// The host's own addresses (every address of the daemon's network
    /// namespace, the gateway's too, their broadcast addresses, and
    /// broadcast and multicast, which the host receives on the bridge):
    /// the VPS may not open connections or send datagrams to them, but
    /// for `allow_host`. Replies to connections the host opens pass.
    #[serde(default)]
    pub deny_host: bool,
    /// What stays reachable on the host under `deny_host`: ports (TCP and
    /// UDP) and `ping`.
    #[serde(default)]
    pub allow_host: Vec<HostPort>,
    /// The socket families a VPS may open (an allowlist: `unix`, `inet`,
    /// `inet6`, `netlink`...); absent: every family the kernel lets it.
    #[serde(default)]
    pub socket_families: Option<Vec<SocketFamily>>,
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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mounts {
    /// Filesystem types a VPS may mount; absent: any the kernel lets it.
    /// Bind mounts and moves are not new filesystems and are not limited.
    #[serde(default)]
    pub allow_types: Option<Vec<FsType>>,
    /// Remounts only read-only (`mount -o remount,ro`).
    #[serde(default)]
    pub remount_read_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// Loading kernel modules on the VPS's behalf (a socket family, a
    /// link type, a filesystem). Inserting modules itself, kexec, setting
    /// the clock and reading the kernel log need capabilities of the
    /// host's user namespace, which no VPS has: the kernel refuses those.
    #[serde(default)]
    pub module_autoload: Permit,
    /// The bpf() system call.
    #[serde(default)]
    pub bpf: Permit,
    /// perf_event_open().
    #[serde(default)]
    pub perf_events: Permit,
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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    /// The devices a VPS may open or mknod; every other is denied.
    pub allow: Vec<DeviceRule>,
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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sysctl {
    /// The sysctls of its own namespaces a VPS may write; every other
    /// write is denied. (Host-global sysctls it cannot write at all.)
    pub allow_write: Vec<SysctlName>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Capabilities the VPS may not use, even in its own user namespace.
    #[serde(default)]
    pub deny: Vec<Capability>,
}

/// Limits a VPS gets at create for what its command line leaves unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyLimits {
    #[serde(default)]
    pub memory: Option<Size>,
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub pids: Option<u64>,
    #[serde(default)]
    pub disk: Option<Size>,
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

/// One policy file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Defaults to the file name without `.yaml`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Absent: the policy applies to VPSs that name it (`create --policy`),
    /// or to every unselected VPS if it is `default`.
    #[serde(default)]
    pub selector: Option<Selector>,
    /// Among policies selecting a VPS, the highest priority wins.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub mode: Mode,
    /// Start VPSs under this policy with the cgroup hooks only when the
    /// kernel cannot run the LSM hooks it needs (logged, shown by `list`).
    #[serde(default)]
    pub allow_degraded: bool,
    #[serde(default)]
    pub files: Files,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub mounts: Mounts,
    #[serde(default)]
    pub kernel: Kernel,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Absent: every device the kernel lets the VPS use.
    #[serde(default)]
    pub devices: Option<Devices>,
    /// Absent: every sysctl write the kernel lets the VPS make.
    #[serde(default)]
    pub sysctl: Option<Sysctl>,
    #[serde(default)]
    pub limits: PolicyLimits,
}

impl Policy {
    /// Parse and check the policy in `text`, read from `file`.
    pub fn parse(file: &str, text: &str) -> Result<Self, PolicyError> {
        let mut p: Policy = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            let msg = e.to_string();
            // serde_yaml appends the position, which the prefix already has.
            let reason = msg
                .rsplit_once(" at line ")
                .map_or(msg.as_str(), |(r, _)| r)
                .to_owned();
            PolicyError {
                file: file.to_owned(),
                line,
                column,
                reason,
            }
        })?;
        if p.name.is_empty() {
            p.name = Path::new(file)
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        }
        if let Err(e) = crate::model::Name::new(&p.name) {
            return Err(PolicyError {
                file: file.to_owned(),
                line: 1,
                column: 1,
                reason: format!("name: {e}"),
            });
        }
        p.check_sysctls_writable(file, text)?;
        if !p.network.deny_host && !p.network.allow_host.is_empty() {
            return Err(PolicyError {
                file: file.to_owned(),
                line: 1,
                column: 1,
                reason: "network.allow_host lists exceptions to network.deny_host, which is off: \
                         set deny_host: true, or remove allow_host"
                    .into(),
            });
        }
        Ok(p)
    }

    /// A sysctl the policy allows must be writable under its own
    /// capability rules: the kernel lets a namespace write /proc/sys/net
    /// only with CAP_NET_ADMIN, so allowing such a sysctl while denying
    /// that capability is a contradiction, refused here.
    fn check_sysctls_writable(&self, file: &str, text: &str) -> Result<(), PolicyError> {
        const NET_ADMIN: u8 = 12;
        if !self.capabilities.deny.iter().any(|c| c.0 == NET_ADMIN) {
            return Ok(());
        }
        let allowed = self.sysctl.iter().flat_map(|s| s.allow_write.iter());
        let Some((i, name)) = allowed
            .enumerate()
            .find(|(_, n)| String::from((*n).clone()).starts_with("net."))
        else {
            return Ok(());
        };
        let name = String::from(name.clone());
        let (line, column) = text
            .lines()
            .enumerate()
            .find_map(|(l, t)| t.find(name.as_str()).map(|c| (l + 1, c + 1)))
            .unwrap_or((1, 1));
        Err(PolicyError {
            file: file.to_owned(),
            line,
            column,
            reason: format!(
                "sysctl.allow_write[{i}]: {name} can never be written while capabilities.deny \
                 has CAP_NET_ADMIN (the kernel needs it for /proc/sys/net); remove one of the two"
            ),
        })
    }

    /// Whether this policy asks anything of the KSAL in `section`.
    pub fn uses(&self, section: Section) -> bool {
        match section {
            Section::FilesDeny => !self.files.deny.is_empty(),
            Section::NetworkDenyEgress => !self.network.deny_egress.is_empty(),
            Section::NetworkRawSockets => self.network.raw_sockets.denied(),
            Section::NetworkPacketSockets => self.network.packet_sockets.denied(),
            Section::MountsAllowTypes => self.mounts.allow_types.is_some(),
            Section::MountsRemountReadOnly => self.mounts.remount_read_only,
            Section::KernelModuleAutoload => self.kernel.module_autoload.denied(),
            Section::KernelBpf => self.kernel.bpf.denied(),
            Section::KernelPerfEvents => self.kernel.perf_events.denied(),
            Section::CapabilitiesDeny => !self.capabilities.deny.is_empty(),
            Section::DevicesAllow => self.devices.is_some(),
            Section::SysctlAllowWrite => self.sysctl.is_some(),
            Section::NetworkDenyHost => self.network.deny_host,
            Section::NetworkSocketFamilies => self.network.socket_families.is_some(),
        }
    }

    fn used_sections(&self) -> impl Iterator<Item = &'static SectionDef> {
        SECTIONS.iter().filter(|s| self.uses(s.section))
    }

    /// The LSM hooks this policy's rules need, in hook order.
    pub fn lsm_hooks(&self) -> Vec<&'static str> {
        HOOKS
            .iter()
            .filter(|h| h.is_lsm() && self.used_sections().any(|s| s.hook == h.hook))
            .map(|h| h.name)
            .collect()
    }

    /// The `ksal_common::guard` bits of this policy.
    pub fn guards(&self) -> u32 {
        self.used_sections().fold(0, |bits, s| bits | s.guard)
    }

    /// Denied capabilities as a bit mask.
    pub fn caps_denied(&self) -> u64 {
        self.capabilities
            .deny
            .iter()
            .fold(0, |m, c| m | (1u64 << c.0))
    }

    /// The name a guard's denials are reported under.
    pub fn guard_rule_name(&self, rule_id: u32) -> Option<String> {
        guard_rule_name(&self.name, rule_id)
    }

    /// Default limits for a new VPS, under those given.
    pub fn fill_limits(&self, given: &Limits) -> Limits {
        Limits {
            memory: given.memory.or(self.limits.memory.map(|s| s.0)),
            cpus: given.cpus.or(self.limits.cpus),
            pids: given.pids.or(self.limits.pids),
            disk: given.disk.or(self.limits.disk.map(|s| s.0)),
        }
    }

    /// Every rule with the name it is reported under.
    pub fn rule_names(&self) -> Vec<String> {
        let files = (0..self.files.deny.len()).map(|i| format!("{}:files.deny[{i}]", self.name));
        let net = (0..self.network.deny_egress.len())
            .map(|i| format!("{}:network.deny_egress[{i}]", self.name));
        files.chain(net).collect()
    }
}

/// The name a guard's denials are reported under in policy `policy`.
pub fn guard_rule_name(policy: &str, rule_id: u32) -> Option<String> {
    let section = Section::of_guard_rule(rule_id)?;
    Some(format!("{policy}:{}", section.def().path))
}

/// A stable rule id for `name` (FNV-1a), so events keep their meaning
/// across reloads; 0 is never used.
pub fn rule_id(name: &str) -> u32 {
    let h = name.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h.max(guard_rule::FIRST_HOST_RULE)
}

/// The policies in force, by name.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub policies: BTreeMap<String, Policy>,
}

impl PolicySet {
    /// The policy for a VPS: the one it names, else the selecting policy of
    /// highest priority (ties: the first by name), else `default`.
    pub fn for_vps(
        &self,
        explicit: Option<&str>,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<&Policy> {
        if let Some(p) = explicit {
            return self.policies.get(p);
        }
        self.policies
            .values()
            .filter(|p| p.selector.as_ref().is_some_and(|s| s.matches(name, labels)))
            .fold(None, |best: Option<&Policy>, p| match best {
                Some(b) if b.priority >= p.priority => Some(b),
                _ => Some(p),
            })
            .or_else(|| self.policies.get(DEFAULT_NAME))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enforce => "enforce",
            Self::Audit => "audit",
        })
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enforce" => Ok(Self::Enforce),
            "audit" => Ok(Self::Audit),
            _ => Err(format!("mode {s:?}: use enforce or audit")),
        }
    }
}

#[cfg(test)]
mod tests {
    use ksal_common::guard;

    use super::*;

    #[test]
    fn the_shipped_policies_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            Policy::parse(&path.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}"));
        }
        let d = Policy::parse("default.yaml", BUILTIN_DEFAULT).unwrap();
        assert_eq!(d.name, "default");
    }

    #[test]
    fn host_and_family_knobs_are_sections_with_their_own_names() {
        let p = Policy::parse(
            "n.yaml",
            "network:\n  deny_host: true\n  allow_host: [53, ping]\n  socket_families: [unix, inet]\n",
        )
        .unwrap();
        assert!(p.uses(Section::NetworkDenyHost) && p.uses(Section::NetworkSocketFamilies));
        assert_eq!(p.network.allow_host, [HostPort::Port(53), HostPort::Ping]);
        assert_eq!(p.guards(), guard::SOCKET_FAMILIES);
        assert_eq!(
            p.lsm_hooks(),
            vec!["socket_create"],
            "deny_host needs no LSM"
        );
        assert_eq!(
            p.guard_rule_name(guard_rule::DENY_HOST).as_deref(),
            Some("n:network.deny_host")
        );
        assert_eq!(
            p.guard_rule_name(guard_rule::SOCKET_FAMILIES).as_deref(),
            Some("n:network.socket_families")
        );
        let e = Policy::parse("n.yaml", "network:\n  allow_host: [22]\n").unwrap_err();
        assert!(e.reason.contains("deny_host"), "{e}");
        let e = Policy::parse("n.yaml", "network:\n  socket_families: [inet, wifi]\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let d = Policy::parse("default.yaml", BUILTIN_DEFAULT).unwrap();
        assert!(d.network.deny_host, "on by default");
        assert!(d.network.allow_host.contains(&HostPort::Port(53)));
    }

    #[test]
    fn errors_name_file_line_column_and_field() {
        let text = "mode: enforce\nfiles:\n  deny:\n    - path: etc/shadow\n";
        let e = Policy::parse("p.yaml", text).unwrap_err();
        assert_eq!((e.line, e.file.as_str()), (4, "p.yaml"));
        assert!(e.reason.contains("files.deny[0]"), "{e}");
        assert!(e.reason.contains("not absolute"), "{e}");
        assert!(e.to_string().starts_with("p.yaml:4:"), "{e}");

        let e = Policy::parse("p.yaml", "mode: block\n").unwrap_err();
        assert!(e.reason.contains("mode"), "{e}");
        for bad in ["10.0.0.0/33", "10.0.0.1/8", "ten"] {
            let text = format!("network:\n  deny_egress:\n    - cidr: {bad}\n");
            let e = Policy::parse("p.yaml", &text).unwrap_err();
            assert_eq!(e.line, 3, "{e}");
        }
        let ok = Policy::parse("p.yaml", "network:\n  deny_egress:\n    - cidr: 0.0.0.0/0\n      port: 25\n    - cidr: 192.0.2.1\n").unwrap();
        assert_eq!(ok.network.deny_egress[1].cidr.prefix, 32);
        let e = Policy::parse("p.yaml", "filez: {}\n").unwrap_err();
        assert!(e.reason.contains("unknown field `filez`"), "{e}");
        let e = Policy::parse("p.yaml", "limits:\n  memory: 12QB\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(Policy::parse("p.yaml", "- just\n- a list\n").is_err());
        assert!(Policy::parse("p.yaml", "name: Bad_Name\n").is_err());
    }

    #[test]
    fn selection_prefers_explicit_then_priority_then_default() {
        let mut set = PolicySet::default();
        for (file, text) in [
            ("default.yaml", "mode: enforce\n"),
            (
                "web.yaml",
                "selector: {labels: {role: web}}\npriority: 10\n",
            ),
            ("named.yaml", "selector: {names: [db]}\n"),
            ("audit.yaml", "mode: audit\n"),
        ] {
            let p = Policy::parse(file, text).unwrap();
            set.policies.insert(p.name.clone(), p);
        }
        let web = BTreeMap::from([("role".to_owned(), "web".to_owned())]);
        let none = BTreeMap::new();
        let pick = |e, n, l| set.for_vps(e, n, l).map(|p| p.name.as_str());
        assert_eq!(pick(None, "x", &web), Some("web"));
        assert_eq!(pick(None, "db", &none), Some("named"));
        assert_eq!(pick(None, "other", &none), Some("default"));
        assert_eq!(pick(Some("audit"), "x", &web), Some("audit"));
    }

    #[test]
    fn guard_sections_become_bits_hooks_and_names() {
        let p = Policy::parse(
            "g.yaml",
            "mounts:\n  allow_types: [tmpfs, proc]\nkernel:\n  bpf: deny\nnetwork:\n  raw_sockets: deny\ncapabilities:\n  deny: [CAP_NET_ADMIN, sys_admin]\n",
        )
        .unwrap();
        assert_eq!(
            p.guards(),
            guard::MOUNT_TYPES | guard::BPF | guard::RAW_SOCKETS
        );
        assert_eq!(p.caps_denied(), (1 << 12) | (1 << 21));
        assert_eq!(
            p.lsm_hooks(),
            vec!["sb_mount", "bpf", "socket_create", "capable"]
        );
        assert_eq!(
            p.guard_rule_name(guard_rule::BPF).as_deref(),
            Some("g:kernel.bpf")
        );
        let e = Policy::parse("g.yaml", "capabilities:\n  deny: [CAP_FLY]\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.reason.contains("CAP_FLY"), "{e}");
        let e = Policy::parse("g.yaml", "kernel:\n  bpf: maybe\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = Policy::parse("g.yaml", "mounts:\n  allow_types: [\"a b\"]\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn device_and_sysctl_rules_parse_and_round_trip() {
        let p = Policy::parse(
            "d.yaml",
            "devices:\n  allow: [\"c 1:3 rwm\", \"c 136:* rw\"]\nsysctl:\n  allow_write: [net.ipv4.ip_forward]\n",
        )
        .unwrap();
        let d = &p.devices.as_ref().unwrap().allow;
        assert_eq!(String::from(d[0]), "c 1:3 rwm");
        assert_eq!(d[1].key().minor, ksal_common::ANY_MINOR);
        assert_eq!(p.guards(), guard::DEVICES | guard::SYSCTL);
        assert!(p.lsm_hooks().is_empty(), "cgroup hooks, not LSM");
        let k = p.sysctl.as_ref().unwrap().allow_write[0].key();
        assert!(k.starts_with(b"net/ipv4/ip_forward\0"));
        for bad in ["x 1:3 r", "c 1 r", "c 1:3 q", "c *:* rwm", "c 1:3"] {
            let text = format!("devices:\n  allow: [\"{bad}\"]\n");
            let e = Policy::parse("d.yaml", &text).unwrap_err();
            assert_eq!(e.line, 2, "{bad}: {e}");
        }
        assert!(Policy::parse("d.yaml", "sysctl:\n  allow_write: [\"a b\"]\n").is_err());
    }

    #[test]
    fn egress_rules_on_one_network_may_name_several_ports_but_not_one_twice() {
        let two_ports = "network:\n  deny_egress:\n    - cidr: 0.0.0.0/0\n      port: 9090\n    - cidr: 0.0.0.0/0\n      port: 9091\n    - cidr: 0.0.0.0/0\n";
        let p = Policy::parse("e.yaml", two_ports).unwrap();
        let ports: Vec<u16> = p.network.deny_egress.iter().map(|r| r.port).collect();
        assert_eq!(ports, [9090, 9091, 0], "every rule is kept");
        let repeat = "network:\n  deny_egress:\n    - cidr: 10.0.0.0/8\n      port: 80\n    - cidr: 10.1.0.0/16\n      port: 80\n    - cidr: 10.0.0.0/8\n      port: 80\n";
        let e = Policy::parse("e.yaml", repeat).unwrap_err();
        assert!(
            e.reason
                .contains("network: deny_egress[2] (10.0.0.0/8, port 80) repeats deny_egress[0]"),
            "names the field: {e}"
        );
        assert_eq!(e.line, 2, "{e}");
        let any = "network:\n  deny_egress:\n    - cidr: 192.0.2.1\n    - cidr: 192.0.2.1/32\n";
        let e = Policy::parse("e.yaml", any).unwrap_err();
        assert!(
            e.reason
                .contains("(192.0.2.1/32, every port) repeats deny_egress[0]"),
            "{e}"
        );
    }

    #[test]
    fn hooks_a_policy_needs_follow_its_sections() {
        let none = Policy::parse(
            "n.yaml",
            "network:\n  deny_egress:\n    - cidr: 10.0.0.0/8\n",
        )
        .unwrap();
        assert!(
            none.lsm_hooks().is_empty(),
            "egress rules run on cgroup hooks"
        );
        assert_eq!(none.guards(), 0);
        let files = Policy::parse(
            "f.yaml",
            "files:\n  deny:\n    - path: /etc/shadow\nmounts:\n  remount_read_only: true\n  allow_types: [proc]\nkernel:\n  perf_events: deny\n",
        )
        .unwrap();
        assert_eq!(
            files.lsm_hooks(),
            ["file_open", "sb_mount", "perf_event_open"],
            "two mount sections need sb_mount once"
        );
        assert_eq!(
            files.guards(),
            guard::MOUNT_TYPES | guard::REMOUNT_READ_ONLY | guard::PERF_EVENTS
        );
        for s in SECTIONS.iter().filter(|s| s.rule != 0) {
            let name = guard_rule_name("p", s.rule).unwrap();
            assert_eq!(name, format!("p:{}", s.path));
        }
        assert_eq!(guard_rule_name("p", guard_rule::FIRST_HOST_RULE), None);
    }

    #[test]
    fn rule_ids_are_stable_and_nonzero() {
        assert_eq!(
            rule_id("default:files.deny[0]"),
            rule_id("default:files.deny[0]")
        );
        assert_ne!(rule_id("a"), rule_id("b"));
        assert!(rule_id("") >= guard_rule::FIRST_HOST_RULE);
    }

    #[test]
    fn a_net_sysctl_allowed_while_net_admin_is_denied_is_refused_where_it_is_written() {
        let text = "capabilities:\n  deny: [CAP_NET_ADMIN]\nsysctl:\n  allow_write: [kernel.hostname, net.ipv4.ip_forward]\n";
        let e = Policy::parse("c.yaml", text).unwrap_err();
        assert_eq!((e.line, e.column), (4, 34), "{e}");
        assert!(e.to_string().contains("sysctl.allow_write[1]"), "{e}");
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        let without_cap = "sysctl:\n  allow_write: [net.ipv4.ip_forward]\n";
        assert!(Policy::parse("c.yaml", without_cap).is_ok());
        let other_sysctl =
            "capabilities:\n  deny: [net_admin]\nsysctl:\n  allow_write: [kernel.hostname]\n";
        assert!(Policy::parse("c.yaml", other_sysctl).is_ok());
    }
}
