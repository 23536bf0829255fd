//! The sections of a policy file, as the YAML spells them.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    network::{HostPort, SocketFamily},
    values::{Capability, Cidr, DeviceRule, FsType, Size, SysctlName, VpsPath},
};

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
    pub fn denied(self) -> bool {
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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    /// The devices a VPS may open or mknod; every other is denied.
    pub allow: Vec<DeviceRule>,
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
