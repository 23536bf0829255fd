//! The one table of the hooks the KSAL attaches to: for each, the id its
//! events carry, the name they are reported under, and the programs that
//! implement it; and, for each policy section, the hook that enforces it.
//! The host loads and attaches from [`HOOKS`], names events from it and
//! derives which LSM hooks a policy needs from [`SECTIONS`]; a test of
//! the built object checks `ksal-ebpf` against both.
use crate::{guard, guard_rule, program_names as p};

/// `enum bpf_attach_type` values of the cgroup hooks vzhost uses.
pub mod attach_type {
    pub const INET_INGRESS: u32 = 0;
    pub const INET_EGRESS: u32 = 1;
    pub const DEVICE: u32 = 6;
    pub const INET4_BIND: u32 = 8;
    pub const INET6_BIND: u32 = 9;
    pub const INET4_CONNECT: u32 = 10;
    pub const INET6_CONNECT: u32 = 11;
    pub const UDP4_SENDMSG: u32 = 14;
    pub const UDP6_SENDMSG: u32 = 15;
    pub const SYSCTL: u32 = 18;
}

/// A hook the KSAL attaches to; events carry its id.
#[repr(u32)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Hook {
    FileOpen = 1,
    /// cgroup connect4/connect6.
    Connect = 2,
    /// cgroup sendmsg4/sendmsg6.
    Sendmsg = 3,
    SbMount = 4,
    ModuleRequest = 5,
    Bpf = 6,
    PerfEventOpen = 7,
    SocketCreate = 8,
    Capable = 9,
    /// cgroup device access (open, mknod).
    Device = 10,
    /// cgroup sysctl writes.
    Sysctl = 11,
    /// cgroup bind4/bind6: a VPS binds only its own address.
    Bind = 12,
    /// cgroup_skb egress: counters and anti-spoofing.
    SkbEgress = 13,
    /// cgroup_skb ingress: counters.
    SkbIngress = 14,
    /// Truncation (truncate, ftruncate, O_TRUNC), chmod, chown, utimes.
    InodeSetattr = 15,
    InodeRename = 16,
    InodeUnlink = 17,
    InodeLink = 18,
    InodeSetxattr = 19,
    InodeRemovexattr = 20,
    /// A new superblock about to be mounted: mount(2) and fsconfig(2)'s
    /// FSCONFIG_CMD_CREATE.
    SbKernMount = 21,
    MoveMount = 22,
    /// tc ingress on the host side of a VPS's veth: every frame the VPS
    /// sends (anti-spoofing, egress rules after the VPS's own NAT).
    VethEgress = 23,
}

/// How a program is attached.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Attach {
    /// To the LSM hook named by its [`HookDef`], on kernels whose hook
    /// takes `nargs` arguments (0: on every kernel). Hooks whose arguments
    /// changed between kernels have a program per count.
    Lsm { nargs: u32 },
    /// To each VPS cgroup at this `bpf_attach_type`.
    Cgroup { attach_type: u32 },
    /// As a tc classifier (clsact ingress) on each VPS's host-side veth.
    Tc,
}

/// One program of the eBPF object (its function name in `ksal-ebpf`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ProgramDef {
    pub name: &'static str,
    pub attach: Attach,
}

/// A hook: its id, the name events and errors use (the LSM hook's own
/// name for LSM hooks), and its programs.
#[derive(Debug)]
pub struct HookDef {
    pub hook: Hook,
    pub name: &'static str,
    pub programs: &'static [ProgramDef],
}

impl HookDef {
    /// Whether this is an LSM hook (which some kernels refuse to run).
    pub fn is_lsm(&self) -> bool {
        self.programs
            .iter()
            .all(|p| matches!(p.attach, Attach::Lsm { .. }))
    }
}

const fn lsm(name: &'static str, nargs: u32) -> ProgramDef {
    ProgramDef {
        name,
        attach: Attach::Lsm { nargs },
    }
}

const fn cgroup(name: &'static str, attach_type: u32) -> ProgramDef {
    ProgramDef {
        name,
        attach: Attach::Cgroup { attach_type },
    }
}

/// Every hook, in id order (`HOOKS[id - 1]`).
pub static HOOKS: [HookDef; 23] = {
    use attach_type as at;
    [
        HookDef {
            hook: Hook::FileOpen,
            name: "file_open",
            programs: &[lsm(p::FILE_OPEN, 0)],
        },
        HookDef {
            hook: Hook::Connect,
            name: "connect",
            programs: &[
                cgroup(p::CONNECT4, at::INET4_CONNECT),
                cgroup(p::CONNECT6, at::INET6_CONNECT),
            ],
        },
        HookDef {
            hook: Hook::Sendmsg,
            name: "sendmsg",
            programs: &[
                cgroup(p::SENDMSG4, at::UDP4_SENDMSG),
                cgroup(p::SENDMSG6, at::UDP6_SENDMSG),
            ],
        },
        HookDef {
            hook: Hook::SbMount,
            name: "sb_mount",
            programs: &[lsm(p::SB_MOUNT, 0)],
        },
        HookDef {
            hook: Hook::ModuleRequest,
            name: "kernel_module_request",
            programs: &[lsm(p::MODULE_REQUEST, 0)],
        },
        HookDef {
            hook: Hook::Bpf,
            name: "bpf",
            programs: &[lsm(p::BPF3, 3), lsm(p::BPF4, 4)],
        },
        HookDef {
            hook: Hook::PerfEventOpen,
            name: "perf_event_open",
            programs: &[lsm(p::PERF_EVENT_OPEN1, 1), lsm(p::PERF_EVENT_OPEN2, 2)],
        },
        HookDef {
            hook: Hook::SocketCreate,
            name: "socket_create",
            programs: &[lsm(p::SOCKET_CREATE, 0)],
        },
        HookDef {
            hook: Hook::Capable,
            name: "capable",
            programs: &[lsm(p::CAPABLE, 0)],
        },
        HookDef {
            hook: Hook::Device,
            name: "device",
            programs: &[cgroup(p::DEVICE, at::DEVICE)],
        },
        HookDef {
            hook: Hook::Sysctl,
            name: "sysctl",
            programs: &[cgroup(p::SYSCTL, at::SYSCTL)],
        },
        HookDef {
            hook: Hook::Bind,
            name: "bind",
            programs: &[
                cgroup(p::BIND4, at::INET4_BIND),
                cgroup(p::BIND6, at::INET6_BIND),
            ],
        },
        HookDef {
            hook: Hook::SkbEgress,
            name: "skb_egress",
            programs: &[cgroup(p::SKB_EGRESS, at::INET_EGRESS)],
        },
        HookDef {
            hook: Hook::SkbIngress,
            name: "skb_ingress",
            programs: &[cgroup(p::SKB_INGRESS, at::INET_INGRESS)],
        },
        HookDef {
            hook: Hook::InodeSetattr,
            name: "inode_setattr",
            programs: &[lsm(p::INODE_SETATTR2, 2), lsm(p::INODE_SETATTR3, 3)],
        },
        HookDef {
            hook: Hook::InodeRename,
            name: "inode_rename",
            programs: &[lsm(p::INODE_RENAME, 0)],
        },
        HookDef {
            hook: Hook::InodeUnlink,
            name: "inode_unlink",
            programs: &[lsm(p::INODE_UNLINK, 0)],
        },
        HookDef {
            hook: Hook::InodeLink,
            name: "inode_link",
            programs: &[lsm(p::INODE_LINK, 0)],
        },
        HookDef {
            hook: Hook::InodeSetxattr,
            name: "inode_setxattr",
            programs: &[lsm(p::INODE_SETXATTR, 0)],
        },
        HookDef {
            hook: Hook::InodeRemovexattr,
            name: "inode_removexattr",
            programs: &[lsm(p::INODE_REMOVEXATTR, 0)],
        },
        HookDef {
            hook: Hook::SbKernMount,
            name: "sb_kern_mount",
            programs: &[lsm(p::SB_KERN_MOUNT, 0)],
        },
        HookDef {
            hook: Hook::MoveMount,
            name: "move_mount",
            programs: &[lsm(p::MOVE_MOUNT, 0)],
        },
        HookDef {
            hook: Hook::VethEgress,
            name: "veth_egress",
            programs: &[ProgramDef {
                name: p::VETH_EGRESS,
                attach: Attach::Tc,
            }],
        },
    ]
};

impl Hook {
    pub fn def(self) -> &'static HookDef {
        &HOOKS[self as usize - 1]
    }

    pub fn name(self) -> &'static str {
        self.def().name
    }

    pub fn from_u32(v: u32) -> Option<Self> {
        let i = (v as usize).checked_sub(1)?;
        HOOKS.get(i).map(|d| d.hook)
    }
}

/// A section of a policy file that asks something of the KSAL.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Section {
    FilesDeny,
    NetworkDenyEgress,
    NetworkRawSockets,
    NetworkPacketSockets,
    MountsAllowTypes,
    MountsRemountReadOnly,
    KernelModuleAutoload,
    KernelBpf,
    KernelPerfEvents,
    CapabilitiesDeny,
    DevicesAllow,
    SysctlAllowWrite,
    NetworkDenyHost,
    NetworkSocketFamilies,
}

/// A policy section: where it is written, the hook that enforces it (and
/// the hooks that hold it on the kernel's other paths to the same action),
/// and (for the guards) its `guard::*` bit and `guard_rule::*` id (0: none;
/// file and egress rules have ids of the host's choosing).
#[derive(Debug)]
pub struct SectionDef {
    pub section: Section,
    pub path: &'static str,
    pub hook: Hook,
    pub also: &'static [Hook],
    pub guard: u32,
    pub rule: u32,
}

impl SectionDef {
    /// Every hook that enforces this section.
    pub fn hooks(&self) -> impl Iterator<Item = Hook> + '_ {
        core::iter::once(self.hook).chain(self.also.iter().copied())
    }

    const fn also(self, also: &'static [Hook]) -> Self {
        Self { also, ..self }
    }
}

const fn section(
    section: Section,
    path: &'static str,
    hook: Hook,
    guard: u32,
    rule: u32,
) -> SectionDef {
    SectionDef {
        section,
        path,
        hook,
        also: &[],
        guard,
        rule,
    }
}

/// Every section, in [`Section`] order.
pub static SECTIONS: [SectionDef; 14] = {
    use Section as S;
    [
        // Content changes without an open for write, replacing the file
        // or a directory above it, and mounting over either.
        section(S::FilesDeny, "files.deny", Hook::FileOpen, 0, 0).also(&[
            Hook::InodeSetattr,
            Hook::InodeRename,
            Hook::InodeUnlink,
            Hook::InodeLink,
            Hook::InodeSetxattr,
            Hook::InodeRemovexattr,
            Hook::SbMount,
            Hook::MoveMount,
        ]),
        section(
            S::NetworkDenyEgress,
            "network.deny_egress",
            Hook::Connect,
            0,
            0,
        ),
        section(
            S::NetworkRawSockets,
            "network.raw_sockets",
            Hook::SocketCreate,
            guard::RAW_SOCKETS,
            guard_rule::RAW_SOCKETS,
        ),
        section(
            S::NetworkPacketSockets,
            "network.packet_sockets",
            Hook::SocketCreate,
            guard::PACKET_SOCKETS,
            guard_rule::PACKET_SOCKETS,
        ),
        // sb_kern_mount also sees superblocks made by fsconfig(2).
        section(
            S::MountsAllowTypes,
            "mounts.allow_types",
            Hook::SbMount,
            guard::MOUNT_TYPES,
            guard_rule::MOUNT_TYPES,
        )
        .also(&[Hook::SbKernMount]),
        section(
            S::MountsRemountReadOnly,
            "mounts.remount_read_only",
            Hook::SbMount,
            guard::REMOUNT_READ_ONLY,
            guard_rule::REMOUNT_READ_ONLY,
        ),
        section(
            S::KernelModuleAutoload,
            "kernel.module_autoload",
            Hook::ModuleRequest,
            guard::MODULE_AUTOLOAD,
            guard_rule::MODULE_AUTOLOAD,
        ),
        section(
            S::KernelBpf,
            "kernel.bpf",
            Hook::Bpf,
            guard::BPF,
            guard_rule::BPF,
        ),
        section(
            S::KernelPerfEvents,
            "kernel.perf_events",
            Hook::PerfEventOpen,
            guard::PERF_EVENTS,
            guard_rule::PERF_EVENTS,
        ),
        section(
            S::CapabilitiesDeny,
            "capabilities.deny",
            Hook::Capable,
            0,
            guard_rule::CAPABILITIES,
        ),
        section(
            S::DevicesAllow,
            "devices.allow",
            Hook::Device,
            guard::DEVICES,
            guard_rule::DEVICES,
        ),
        section(
            S::SysctlAllowWrite,
            "sysctl.allow_write",
            Hook::Sysctl,
            guard::SYSCTL,
            guard_rule::SYSCTL,
        ),
        section(
            S::NetworkDenyHost,
            "network.deny_host",
            Hook::Connect,
            0,
            guard_rule::DENY_HOST,
        ),
        section(
            S::NetworkSocketFamilies,
            "network.socket_families",
            Hook::SocketCreate,
            guard::SOCKET_FAMILIES,
            guard_rule::SOCKET_FAMILIES,
        ),
    ]
};

impl Section {
    pub fn def(self) -> &'static SectionDef {
        &SECTIONS[self as usize]
    }

    /// The section whose guard reports denials under `rule`.
    pub fn of_guard_rule(rule: u32) -> Option<Self> {
        SECTIONS
            .iter()
            .find(|s| s.rule != 0 && s.rule == rule)
            .map(|s| s.section)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_indexed_by_id_and_order() {
        for (i, d) in HOOKS.iter().enumerate() {
            assert_eq!(d.hook as usize, i + 1, "{}", d.name);
            assert_eq!(Hook::from_u32(d.hook as u32), Some(d.hook));
            assert_eq!(d.hook.name(), d.name);
            assert!(!d.programs.is_empty(), "{}", d.name);
        }
        assert_eq!(Hook::from_u32(0), None);
        assert_eq!(Hook::from_u32(HOOKS.len() as u32 + 1), None);
        for (i, s) in SECTIONS.iter().enumerate() {
            assert_eq!(s.section as usize, i, "{}", s.path);
            assert_eq!(s.section.def().path, s.path);
        }
    }

    #[test]
    fn names_programs_bits_and_rule_ids_are_unique() {
        let programs = || HOOKS.iter().flat_map(|h| h.programs.iter());
        for (i, a) in programs().enumerate() {
            assert!(
                programs().skip(i + 1).all(|b| b.name != a.name),
                "{}",
                a.name
            );
        }
        for (i, a) in HOOKS.iter().enumerate() {
            assert!(
                HOOKS[i + 1..].iter().all(|b| b.name != a.name),
                "{}",
                a.name
            );
        }
        for (i, a) in SECTIONS.iter().enumerate() {
            for b in &SECTIONS[i + 1..] {
                assert_ne!(a.path, b.path);
                assert!(a.guard == 0 || a.guard != b.guard, "{}", a.path);
                assert!(a.rule == 0 || a.rule != b.rule, "{}", a.path);
            }
        }
    }

    #[test]
    fn a_hook_is_all_lsm_or_all_cgroup_and_lsm_variants_differ_in_arity() {
        for h in &HOOKS {
            let nargs = |p: &ProgramDef| match p.attach {
                Attach::Lsm { nargs } => Some(nargs),
                Attach::Cgroup { .. } | Attach::Tc => None,
            };
            let lsm = h.programs.iter().filter(|p| nargs(p).is_some()).count();
            assert!(
                lsm == 0 || lsm == h.programs.len(),
                "{} mixes kinds",
                h.name
            );
            if lsm > 1 {
                for (i, a) in h.programs.iter().enumerate() {
                    assert_ne!(nargs(a), Some(0), "{}: a variant needs its arity", h.name);
                    assert!(h.programs[i + 1..].iter().all(|b| nargs(b) != nargs(a)));
                }
            }
        }
    }

    #[test]
    fn guard_rules_lead_back_to_their_section() {
        assert_eq!(
            Section::of_guard_rule(guard_rule::BPF),
            Some(Section::KernelBpf)
        );
        assert_eq!(
            Section::of_guard_rule(guard_rule::CAPABILITIES).map(|s| s.def().hook),
            Some(Hook::Capable)
        );
        assert_eq!(Section::of_guard_rule(0), None);
        assert_eq!(Section::of_guard_rule(guard_rule::FIRST_HOST_RULE), None);
    }
}
