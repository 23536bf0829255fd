//! KSAL policies: YAML files an administrator drops into the policies
//! directory. Every value is checked while it is parsed, so a bad file is
//! refused with `file:line:column: reason` and never half-applied.
mod network;
mod sections;
mod values;
pub mod watch;

pub use network::{FAMILIES, HostPort, SocketFamily, family_mask};
pub use sections::*;
pub use values::*;

use std::{collections::BTreeMap, fmt, path::Path, str::FromStr};

use ksal_common::{HOOKS, SECTIONS, Section, SectionDef, guard_rule};
use serde::{Deserialize, Serialize};

use crate::model::Limits;

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
            .filter(|h| h.is_lsm() && self.used_sections().any(|s| s.hooks().any(|k| k == h.hook)))
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
mod tests;
