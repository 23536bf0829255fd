//! The contract between the in-kernel KSAL programs (`ksal-ebpf`) and the
//! host side (`vzhost`): map names, key and value layouts, hook and verdict
//! ids. Every struct is `#[repr(C)]` with fixed-width fields and explicit
//! padding so both sides agree byte for byte.
#![no_std]

mod hooks;

pub use hooks::{
    Attach, HOOKS, Hook, HookDef, ProgramDef, SECTIONS, Section, SectionDef, attach_type,
};

/// Map names, as they appear in the eBPF object and under the pin directory.
pub mod map_names {
    pub const CONFIG: &str = "KSAL_CONFIG";
    pub const VPS: &str = "KSAL_VPS";
    pub const FILE_RULES: &str = "KSAL_FILE_RULES";
    pub const EVENTS: &str = "KSAL_EVENTS";
    pub const EVENTS_DROPPED: &str = "KSAL_EVENTS_DROPPED";
    pub const VPS_NET: &str = "KSAL_VPS_NET";
    pub const NET_COUNTERS: &str = "KSAL_NET_COUNTERS";
    pub const EGRESS_RULES: &str = "KSAL_EGRESS_RULES";
    pub const EVENT_RATE: &str = "KSAL_EVENT_RATE";
    pub const MOUNT_ALLOW: &str = "KSAL_MOUNT_ALLOW";
    pub const DEVICE_ALLOW: &str = "KSAL_DEVICE_ALLOW";
    pub const SYSCTL_ALLOW: &str = "KSAL_SYSCTL_ALLOW";
    pub const VETH: &str = "KSAL_VETH";
    /// Every map, as pinned under the pin directory.
    pub const ALL: [&str; 13] = [
        CONFIG,
        VPS,
        FILE_RULES,
        EVENTS,
        EVENTS_DROPPED,
        VPS_NET,
        NET_COUNTERS,
        EGRESS_RULES,
        EVENT_RATE,
        MOUNT_ALLOW,
        DEVICE_ALLOW,
        SYSCTL_ALLOW,
        VETH,
    ];
}

/// Program names (the function names in `ksal-ebpf`).
pub mod program_names {
    pub const FILE_OPEN: &str = "ksal_file_open";
    pub const SB_MOUNT: &str = "ksal_sb_mount";
    pub const MODULE_REQUEST: &str = "ksal_kernel_module_request";
    /// Hooks whose arguments changed between kernels have a program per
    /// argument count (the verdict of an earlier program follows the last
    /// argument); the host loads the one the running kernel's BTF asks for.
    pub const BPF3: &str = "ksal_bpf3";
    pub const BPF4: &str = "ksal_bpf4";
    pub const PERF_EVENT_OPEN1: &str = "ksal_perf_event_open1";
    pub const PERF_EVENT_OPEN2: &str = "ksal_perf_event_open2";
    pub const SOCKET_CREATE: &str = "ksal_socket_create";
    pub const CAPABLE: &str = "ksal_capable";
    pub const DEVICE: &str = "ksal_device";
    pub const SYSCTL: &str = "ksal_sysctl";
    pub const CGROUP_PROBE: &str = "ksal_cgroup_probe";
    pub const SKB_EGRESS: &str = "ksal_skb_egress";
    pub const SKB_INGRESS: &str = "ksal_skb_ingress";
    pub const BIND4: &str = "ksal_bind4";
    pub const CONNECT4: &str = "ksal_connect4";
    pub const SENDMSG4: &str = "ksal_sendmsg4";
    pub const BIND6: &str = "ksal_bind6";
    pub const CONNECT6: &str = "ksal_connect6";
    pub const SENDMSG6: &str = "ksal_sendmsg6";
    /// inode_setattr(dentry, attr) up to Linux 6.2; (idmap, dentry, attr)
    /// from 6.3.
    pub const INODE_SETATTR2: &str = "ksal_inode_setattr2";
    pub const INODE_SETATTR3: &str = "ksal_inode_setattr3";
    pub const INODE_RENAME: &str = "ksal_inode_rename";
    pub const INODE_UNLINK: &str = "ksal_inode_unlink";
    pub const INODE_LINK: &str = "ksal_inode_link";
    pub const INODE_SETXATTR: &str = "ksal_inode_setxattr";
    pub const INODE_REMOVEXATTR: &str = "ksal_inode_removexattr";
    pub const SB_KERN_MOUNT: &str = "ksal_sb_kern_mount";
    pub const MOVE_MOUNT: &str = "ksal_move_mount";
    pub const VETH_EGRESS: &str = "ksal_veth_egress";
}

/// Capacity of the VPS table: how many VPSs one host can register.
pub const MAX_VPS: u32 = 16384;
/// Capacity of the file rule table, shared by all VPSs.
pub const MAX_FILE_RULES: u32 = 65536;
/// Ring buffer size for events (bytes, a power of two and page multiple).
pub const EVENTS_RINGBUF_BYTES: u32 = 256 * 1024;
pub const COMM_LEN: usize = 16;
/// Events one VPS may send per second on each CPU; the rest are counted
/// as dropped, so a VPS looping on a denied action cannot flood the host.
pub const EVENTS_PER_SECOND: u64 = 200;

/// Per-CPU event budget of one VPS (`KSAL_EVENT_RATE`, by VPS id).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EventRate {
    /// Start of the current one-second window (ktime ns).
    pub window_ns: u64,
    pub sent: u64,
}

/// How a VPS's rules are applied.
pub mod mode {
    /// Deny and record.
    pub const ENFORCE: u32 = 1;
    /// Allow and record.
    pub const AUDIT: u32 = 2;
}

/// What a VPS's policy denies outside file and network rules: bits of
/// `VpsEntry::guards`.
pub mod guard {
    /// New mounts only of the filesystem types in `KSAL_MOUNT_ALLOW`.
    pub const MOUNT_TYPES: u32 = 1 << 0;
    /// Remounts only read-only.
    pub const REMOUNT_READ_ONLY: u32 = 1 << 1;
    pub const MODULE_AUTOLOAD: u32 = 1 << 2;
    pub const BPF: u32 = 1 << 3;
    pub const PERF_EVENTS: u32 = 1 << 4;
    pub const RAW_SOCKETS: u32 = 1 << 5;
    pub const PACKET_SOCKETS: u32 = 1 << 6;
    /// Devices only as `KSAL_DEVICE_ALLOW` lists them.
    pub const DEVICES: u32 = 1 << 7;
    /// sysctl writes only to the names in `KSAL_SYSCTL_ALLOW`.
    pub const SYSCTL: u32 = 1 << 8;
    /// Sockets only of the families in `VpsEntry::families_allowed`.
    pub const SOCKET_FAMILIES: u32 = 1 << 9;
    /// The VPS has entries in `KSAL_FILE_RULES`. The file hooks run on
    /// every open, rename and unlink; without this bit they end at the
    /// VPS lookup, before any kernel read or rule lookup.
    pub const FILE_RULES: u32 = 1 << 10;
}

/// Rule ids of the guards, as events carry them (file and network rules
/// have ids of the host's choosing, never below `FIRST_HOST_RULE`).
pub mod guard_rule {
    pub const MOUNT_TYPES: u32 = 1;
    pub const REMOUNT_READ_ONLY: u32 = 2;
    pub const MODULE_AUTOLOAD: u32 = 3;
    pub const BPF: u32 = 4;
    pub const PERF_EVENTS: u32 = 5;
    pub const RAW_SOCKETS: u32 = 6;
    pub const PACKET_SOCKETS: u32 = 7;
    pub const CAPABILITIES: u32 = 8;
    pub const DEVICES: u32 = 9;
    pub const SYSCTL: u32 = 10;
    pub const SOCKET_FAMILIES: u32 = 11;
    /// The value of the egress entries for the host's own addresses
    /// (`network.deny_host`): on the veth only flow-opening packets are
    /// dropped, so replies to connections the host opened pass.
    pub const DENY_HOST: u32 = 12;
    /// Frames dropped on the VPS's veth for a source (MAC, IPv4, ARP
    /// sender) not its own, or a protocol it may not send.
    pub const SPOOFED: u32 = 13;
    pub const FIRST_HOST_RULE: u32 = 16;
}

/// What happened to the action an event describes.
pub mod verdict {
    pub const DENIED: u32 = 1;
    pub const AUDITED: u32 = 2;
}

/// File access bits of a rule, matched against the `f_mode` of the open.
pub mod access {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const ANY: u32 = READ | WRITE;
    /// The name stays: no rename, unlink or link of it and nothing mounted
    /// over it. Write rules carry it, and so does every directory on the
    /// way to a write-protected file (renaming `/etc` would swap
    /// `/etc/passwd` out as surely as renaming the file).
    pub const NAME: u32 = 4;
}

/// Byte offsets of the kernel struct fields the programs read, taken from
/// the running kernel's BTF by the host so one object works on every kernel.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    pub file_f_inode: u32,
    pub file_f_mode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub super_block_s_dev: u32,
    pub dentry_d_inode: u32,
    pub super_block_s_type: u32,
    pub file_system_type_name: u32,
    pub path_dentry: u32,
    pub _pad: u32,
}

/// Global configuration, element 0 of the `KSAL_CONFIG` array.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// cgroup v2 depth of the VPS cgroups (the daemon's depth + 1): tasks
    /// are mapped to their VPS by their ancestor cgroup at this level, so
    /// child cgroups a VPS makes stay covered.
    pub vps_cgroup_level: u32,
    /// Non-zero once the host has filled in the config; programs allow
    /// everything until then rather than act on zero offsets.
    pub ready: u32,
    pub layout: KernelLayout,
}

/// Value of the `KSAL_VPS` hash map, keyed by the VPS's cgroup v2 id.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct VpsEntry {
    pub vps_id: u32,
    pub mode: u32,
    /// `guard::*` bits.
    pub guards: u32,
    pub _pad: u32,
    /// Capabilities (bit n = capability n) the VPS may not use, even in
    /// its own user namespace.
    pub caps_denied: u64,
    /// Socket families (bit n = AF n) it may open, when its guards have
    /// `guard::SOCKET_FAMILIES`.
    pub families_allowed: u64,
}

/// Key of `KSAL_MOUNT_ALLOW`: a filesystem type a VPS may mount, NUL-padded.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct MountKey {
    pub vps_id: u32,
    pub fstype: [u8; FSTYPE_LEN],
}

/// Longest filesystem type name a mount rule holds, with its NUL.
pub const FSTYPE_LEN: usize = 16;

/// Key of `KSAL_DEVICE_ALLOW`: a device (or all minors of a major, with
/// `minor` = `ANY_MINOR`) a VPS may use; the value is its access bits
/// (`device_access::*`).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeviceKey {
    pub vps_id: u32,
    /// 1 block, 2 character (BPF_DEVCG_DEV_*).
    pub kind: u32,
    pub major: u32,
    pub minor: u32,
}

pub const ANY_MINOR: u32 = u32::MAX;

/// Device access bits, as the kernel passes them (BPF_DEVCG_ACC_*).
pub mod device_access {
    pub const MKNOD: u32 = 1;
    pub const READ: u32 = 2;
    pub const WRITE: u32 = 4;
}

/// Longest sysctl name a rule holds (`net/ipv4/ip_forward`), with its NUL.
pub const SYSCTL_NAME_LEN: usize = 64;

/// Key of `KSAL_SYSCTL_ALLOW`: a sysctl a VPS may write, by its path under
/// /proc/sys, NUL-padded.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct SysctlKey {
    pub vps_id: u32,
    pub name: [u8; SYSCTL_NAME_LEN],
}

/// Key of the `KSAL_FILE_RULES` hash map: one denied inode for one VPS.
/// `dev` is the kernel's internal encoding (major << 20 | minor).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileRuleKey {
    pub vps_id: u32,
    pub dev: u32,
    pub ino: u64,
}

#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FileRule {
    pub rule_id: u32,
    /// `access::*` bits that are denied.
    pub access: u32,
}

/// Value of `KSAL_VPS_NET`, keyed by the VPS's cgroup v2 id: what the
/// network guards need to know of it.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct VpsNet {
    pub vps_id: u32,
    /// Its IPv4 address, network byte order (as in packets and sockaddrs).
    pub ipv4_be: u32,
    /// Its IPv6 address as four words in network byte order (as in
    /// sockaddrs); all zero: none.
    pub ipv6_be: [u32; 4],
}

/// Value of `KSAL_VETH`, keyed by the ifindex of a VPS's host-side veth:
/// what the tc program on it checks every frame the VPS sends against.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct VethEntry {
    /// The VPS's cgroup v2 id: its `KSAL_VPS` entry gives the mode.
    pub cgroup_id: u64,
    pub vps_id: u32,
    /// Its IPv4 address, network byte order.
    pub ipv4_be: u32,
    /// The MAC address of its eth0.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Its IPv6 address (all zero: none).
    pub ipv6: [u8; 16],
}

/// The value of an egress entry that lets through what a less specific
/// entry denies (`network.allow_host`).
pub const EGRESS_ALLOW: u32 = 0;
/// The port under which ICMP echo requests are looked up in the egress
/// rules (above every TCP/UDP port): `allow_host: [ping]`.
pub const EGRESS_PORT_PING: u32 = 1 << 16;

/// Per-CPU traffic counters of one VPS (`KSAL_NET_COUNTERS`, by VPS id).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    /// Egress packets dropped for a source address not the VPS's own (by
    /// the cgroup hook or, for every frame, the tc program on its veth).
    pub spoofed_dropped: u64,
}

/// LPM key data of `KSAL_EGRESS_RULES` (the value is the id of the rule
/// that denies, `guard_rule::DENY_HOST`, or `EGRESS_ALLOW`): the
/// VPS id, the destination port (0: every port) and the IPv4 address, all
/// big-endian, so a rule for a /n network has a prefix of
/// `EGRESS_FIXED_BITS + n`. A connection is looked up under its own port
/// and under port 0, so every rule that covers it counts, however many
/// more specific rules there are for other ports.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressKey {
    pub vps_id_be: u32,
    pub port_be: u32,
    pub ipv4_be: u32,
}

/// Prefix bits of an egress key before the address: VPS id and port.
pub const EGRESS_FIXED_BITS: u32 = 64;

/// A denial or audit record sent through the `KSAL_EVENTS` ring buffer.
#[repr(C)]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    /// Hook-specific object: the inode number for file hooks.
    pub object: u64,
    pub vps_id: u32,
    pub hook: u32,
    pub rule_id: u32,
    pub verdict: u32,
    pub pid: u32,
    pub tgid: u32,
    pub comm: [u8; COMM_LEN],
}

/// Convert a userspace `st_dev` (glibc encoding) to the kernel's `s_dev`.
pub const fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xfffff)
}

#[cfg(feature = "user")]
mod pod {
    use super::{Config, Event, FileRule, FileRuleKey, VpsEntry};
    // SAFETY: each type is #[repr(C)], Copy, made only of integers with no
    // implicit padding, so every bit pattern is valid.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for VpsEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FileRuleKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FileRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VpsNet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EgressKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EventRate {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MountKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DeviceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SysctlKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VethEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<KernelLayout>(), 40);
        assert_eq!(size_of::<Config>(), 48);
        assert_eq!(size_of::<VpsEntry>(), 32);
        assert_eq!(size_of::<VethEntry>(), 40);
        assert_eq!(size_of::<MountKey>(), 4 + FSTYPE_LEN);
        assert_eq!(size_of::<DeviceKey>(), 16);
        assert_eq!(size_of::<SysctlKey>(), 4 + SYSCTL_NAME_LEN);
        assert_eq!(size_of::<FileRuleKey>(), 16);
        assert_eq!(size_of::<FileRule>(), 8);
        assert_eq!(size_of::<Event>(), 24 + 24 + COMM_LEN);
        assert_eq!(size_of::<VpsNet>(), 24);
        assert_eq!(size_of::<NetCounters>(), 40);
        assert_eq!(size_of::<EgressKey>(), 12);
        assert_eq!(size_of::<EventRate>(), 16);
    }

    #[test]
    fn kernel_dev_matches_mkdev() {
        assert_eq!(kernel_dev(8, 1), (8 << 20) | 1);
        assert_eq!(kernel_dev(0, 45), 45);
    }
}
