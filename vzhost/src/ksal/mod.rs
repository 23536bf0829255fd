//! The host side of the Kernel Service Abstraction Layer: load the embedded
//! eBPF object, tell it the kernel's struct layout and the VPS cgroup level,
//! attach the hooks, register VPSs and their rules, and read events.
pub mod btf;
mod cgroup_attach;
mod events;
pub mod kernel_fs;
pub mod pins;

use std::{os::unix::fs::MetadataExt as _, path::Path};

use std::os::fd::AsFd as _;

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf,
        lpm_trie::Key as LpmKey,
    },
    programs::{
        CgroupAttachMode, CgroupDevice, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr,
        CgroupSysctl, Lsm, ProgramError,
    },
};
use ksal_common::{
    Config, DeviceKey, EgressKey, EgressRule, FileRule, FileRuleKey, MountKey, NetCounters,
    SysctlKey, VpsEntry, VpsNet, kernel_dev, map_names, program_names,
};

use cgroup_attach::attach_type;
pub use events::{EventCounts, EventLog, EventReader, KsalEvent, LoggedEvent};

/// The compiled KSAL programs, built by build.rs from `ksal-ebpf`.
static KSAL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ksal"));

#[derive(Debug, thiserror::Error)]
pub enum KsalError {
    #[error("loading the KSAL eBPF object failed: {0}")]
    Object(#[from] aya::EbpfError),
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("the KSAL object has no program {0} (vzhost and ksal-ebpf are out of step; rebuild)")]
    NoProgram(&'static str),
    #[error("the KSAL object has no map {0} (vzhost and ksal-ebpf are out of step; rebuild)")]
    NoMap(&'static str),
    #[error("{}", describe_program_error(program, hook, source))]
    Program {
        program: &'static str,
        hook: &'static str,
        source: ProgramError,
    },
    #[error(
        "this kernel's LSM hook {hook} takes {nargs} arguments, a signature this vzhost has no \
         program for; update vzhost"
    )]
    HookSignature { hook: &'static str, nargs: u32 },
    #[error("attaching KSAL program for {hook} to cgroup {cgroup}: {source}")]
    Attach {
        hook: &'static str,
        cgroup: String,
        source: std::io::Error,
    },
    #[error("KSAL link for {hook}: {source}")]
    Link {
        hook: &'static str,
        source: aya::programs::links::LinkError,
    },
    #[error("KSAL map {map}: {source}")]
    Map { map: &'static str, source: MapError },
    #[error("cannot resolve policy path {path}: {source}")]
    Path {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, KsalError>;

fn describe_program_error(program: &str, hook: &str, err: &ProgramError) -> String {
    let errno = match err {
        ProgramError::LoadError { io_error, .. } => io_error.raw_os_error(),
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    };
    match errno {
        Some(libc::EPERM) => format!(
            "the kernel refused to load BPF LSM program {program} for hook {hook} (EPERM): \
             this host does not permit loading BPF LSM programs (the kernel or a policy \
             around it refuses BPF_PROG_LOAD for LSM); LSM enforcement needs a host that \
             allows it, such as the test VM (`cargo xtask vm run`)"
        ),
        Some(libc::EINVAL | libc::EOPNOTSUPP) => format!(
            "the kernel cannot run BPF LSM program {program} for hook {hook}: BPF LSM is not \
             active (boot with `lsm=...,bpf` and CONFIG_BPF_LSM=y): {err}"
        ),
        _ => format!("BPF program {program} for hook {hook} failed: {err}"),
    }
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> KsalError {
    move |source| KsalError::Map { map, source }
}

/// LSM hooks and their programs by the hook's argument count (0: any).
pub const LSM_HOOKS: [(&str, &[(u32, &str)]); 7] = [
    ("file_open", &[(0, program_names::FILE_OPEN)]),
    ("sb_mount", &[(0, program_names::SB_MOUNT)]),
    (
        "kernel_module_request",
        &[(0, program_names::MODULE_REQUEST)],
    ),
    ("bpf", &[(3, program_names::BPF3), (4, program_names::BPF4)]),
    (
        "perf_event_open",
        &[
            (1, program_names::PERF_EVENT_OPEN1),
            (2, program_names::PERF_EVENT_OPEN2),
        ],
    ),
    ("socket_create", &[(0, program_names::SOCKET_CREATE)]),
    ("capable", &[(0, program_names::CAPABLE)]),
];

/// The program for `hook` that fits this kernel's signature of it.
fn lsm_program_for(
    btf: &btf::Btf,
    hook: &'static str,
    variants: &[(u32, &'static str)],
) -> Result<&'static str> {
    if let [(0, program)] = variants {
        return Ok(program);
    }
    let nargs = btf.func_params(&format!("bpf_lsm_{hook}"))?;
    variants
        .iter()
        .find(|(n, _)| *n == nargs)
        .map(|(_, p)| *p)
        .ok_or(KsalError::HookSignature { hook, nargs })
}

/// cgroup_skb programs attached to every VPS cgroup.
const CGROUP_SKB: [(&str, &str, u32); 2] = [
    (
        program_names::SKB_EGRESS,
        "cgroup_skb/egress",
        attach_type::INET_EGRESS,
    ),
    (
        program_names::SKB_INGRESS,
        "cgroup_skb/ingress",
        attach_type::INET_INGRESS,
    ),
];
/// cgroup sock_addr programs attached to every VPS cgroup.
const SOCK_ADDR: [(&str, &str, u32); 6] = [
    (
        program_names::BIND4,
        "cgroup/bind4",
        attach_type::INET4_BIND,
    ),
    (
        program_names::CONNECT4,
        "cgroup/connect4",
        attach_type::INET4_CONNECT,
    ),
    (
        program_names::SENDMSG4,
        "cgroup/sendmsg4",
        attach_type::UDP4_SENDMSG,
    ),
    (
        program_names::BIND6,
        "cgroup/bind6",
        attach_type::INET6_BIND,
    ),
    (
        program_names::CONNECT6,
        "cgroup/connect6",
        attach_type::INET6_CONNECT,
    ),
    (
        program_names::SENDMSG6,
        "cgroup/sendmsg6",
        attach_type::UDP6_SENDMSG,
    ),
];

/// The device and sysctl programs, attached with the others.
const CGROUP_DEVICE: (&str, &str, u32) = (program_names::DEVICE, "cgroup/dev", attach_type::DEVICE);
const CGROUP_SYSCTL: (&str, &str, u32) =
    (program_names::SYSCTL, "cgroup/sysctl", attach_type::SYSCTL);

/// Every cgroup program a VPS cgroup carries.
fn guard_hooks() -> impl Iterator<Item = &'static (&'static str, &'static str, u32)> {
    CGROUP_SKB
        .iter()
        .chain(SOCK_ADDR.iter())
        .chain([&CGROUP_DEVICE, &CGROUP_SYSCTL])
}

/// The kernel rules of one VPS, resolved by the host from its policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VpsRules {
    pub files: Vec<(FileRuleKey, FileRule)>,
    pub egress: Vec<EgressDeny>,
    /// Filesystem types it may mount (NUL-padded), when its guards restrict them.
    pub mount_types: Vec<[u8; ksal_common::FSTYPE_LEN]>,
    /// Devices it may use (the key's vps_id is filled in) and how.
    pub devices: Vec<(DeviceKey, u32)>,
    /// sysctls it may write, as paths under /proc/sys (NUL-padded).
    pub sysctls: Vec<[u8; ksal_common::SYSCTL_NAME_LEN]>,
}

/// Connections and datagrams to `net/prefix` (on `port`, or any port
/// with 0) are denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressDeny {
    pub net: std::net::Ipv4Addr,
    pub prefix: u8,
    pub port: u16,
    pub rule_id: u32,
}

/// The loaded and attached KSAL.
pub struct Ksal {
    ebpf: Ebpf,
    /// The LSM links: pinned, or (without a pin directory) held here for
    /// as long as the KSAL lives.
    _lsm_links: pins::Links,
    /// The rules in the maps, by VPS id, so a reload removes what went.
    applied: std::collections::HashMap<u32, VpsRules>,
}

fn cgroup_skb<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
    hook: &'static str,
) -> Result<&'a mut CgroupSkb> {
    ebpf.program_mut(program)
        .ok_or(KsalError::NoProgram(program))?
        .try_into()
        .map_err(program_error(program, hook))
}

fn sock_addr<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
    hook: &'static str,
) -> Result<&'a mut CgroupSockAddr> {
    ebpf.program_mut(program)
        .ok_or(KsalError::NoProgram(program))?
        .try_into()
        .map_err(program_error(program, hook))
}

impl Ksal {
    /// Load the KSAL, configure it for this kernel, and attach the LSM hooks.
    /// VPS cgroups sit at `vps_cgroup_level` in the cgroup v2 hierarchy.
    /// With `pins`, maps and links are pinned there (and taken over from a
    /// previous daemon); without, they go when this process does.
    pub fn load(vps_cgroup_level: u32, pins: Option<&Path>) -> Result<Self> {
        Self::load_inner(vps_cgroup_level, true, pins)
    }

    /// The cgroup programs only, for hosts that refuse BPF LSM programs.
    pub fn load_cgroup_only(vps_cgroup_level: u32, pins: Option<&Path>) -> Result<Self> {
        Self::load_inner(vps_cgroup_level, false, pins)
    }

    fn load_inner(vps_cgroup_level: u32, lsm: bool, pins: Option<&Path>) -> Result<Self> {
        let btf_reader = btf::Btf::from_sys_fs()?;
        let layout = btf_reader.kernel_layout()?;
        let pin_err = |source| KsalError::Path {
            path: pins.map_or_else(String::new, |p| p.display().to_string()),
            source,
        };
        let map_pins = match pins {
            Some(dir) => pins::prepare(dir, KSAL_OBJECT, &map_names::ALL).map_err(pin_err)?,
            None => Vec::new(),
        };
        let mut loader = EbpfLoader::new();
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(KSAL_OBJECT)?;
        let mut links = pins::Links::new(pins);
        {
            let map = ebpf
                .map_mut(map_names::CONFIG)
                .ok_or(KsalError::NoMap(map_names::CONFIG))?;
            let mut config: Array<&mut MapData, Config> =
                Array::try_from(map).map_err(map_err(map_names::CONFIG))?;
            let value = Config {
                vps_cgroup_level,
                ready: 1,
                layout,
            };
            config
                .set(0, value, 0)
                .map_err(map_err(map_names::CONFIG))?;
        }
        if lsm {
            let aya_btf = kernel_btf()?;
            for (hook, variants) in LSM_HOOKS {
                let program = lsm_program_for(&btf_reader, hook, variants)?;
                let prog = load_lsm(&mut ebpf, program, hook, &aya_btf)?;
                let id = prog.attach().map_err(program_error(program, hook))?;
                let link = prog.take_link(id).map_err(program_error(program, hook))?;
                links
                    .keep(&format!("lsm/{hook}"), link.into())
                    .map_err(pin_err)?;
            }
        }
        for (program, hook, _) in CGROUP_SKB {
            cgroup_skb(&mut ebpf, program, hook)?
                .load()
                .map_err(program_error(program, hook))?;
        }
        for (program, hook, _) in SOCK_ADDR {
            sock_addr(&mut ebpf, program, hook)?
                .load()
                .map_err(program_error(program, hook))?;
        }
        let (program, hook, _) = CGROUP_DEVICE;
        let prog: &mut CgroupDevice = ebpf
            .program_mut(program)
            .ok_or(KsalError::NoProgram(program))?
            .try_into()
            .map_err(program_error(program, hook))?;
        prog.load().map_err(program_error(program, hook))?;
        let (program, hook, _) = CGROUP_SYSCTL;
        let prog: &mut CgroupSysctl = ebpf
            .program_mut(program)
            .ok_or(KsalError::NoProgram(program))?
            .try_into()
            .map_err(program_error(program, hook))?;
        prog.load().map_err(program_error(program, hook))?;
        tracing::info!(vps_cgroup_level, ?layout, lsm, pins = ?pins, "KSAL loaded");
        let mut ksal = Self {
            ebpf,
            _lsm_links: links,
            applied: std::collections::HashMap::new(),
        };
        ksal.recover_applied()?;
        Ok(ksal)
    }

    /// Put the tasks of cgroup `cgroup_id` (and its descendants) under the
    /// rules of `vps_id`, in `mode` (`ksal_common::mode`).
    pub fn register_vps(&mut self, cgroup_id: u64, vps_id: u32, mode: u32) -> Result<()> {
        self.register_entry(
            cgroup_id,
            VpsEntry {
                vps_id,
                mode,
                ..Default::default()
            },
        )
    }

    /// Register (or update in place) a VPS with its mode and guards.
    pub fn register_entry(&mut self, cgroup_id: u64, entry: VpsEntry) -> Result<()> {
        self.typed_map(map_names::VPS)?
            .insert(cgroup_id, entry, 0)
            .map_err(map_err(map_names::VPS))
    }

    pub fn unregister_vps(&mut self, cgroup_id: u64) -> Result<()> {
        remove_key::<u64, VpsEntry>(
            &mut self.typed_map(map_names::VPS)?,
            &cgroup_id,
            map_names::VPS,
        )
    }

    /// Deny `vps_id` the `access` (`ksal_common::access`) to the file at
    /// `path`, identified by device and inode so every other name of the
    /// same file is covered too.
    pub fn deny_file(&mut self, vps_id: u32, path: &Path, access: u32, rule_id: u32) -> Result<()> {
        let key = file_key(vps_id, path)?;
        self.typed_map(map_names::FILE_RULES)?
            .insert(key, FileRule { rule_id, access }, 0)
            .map_err(map_err(map_names::FILE_RULES))
    }

    pub fn allow_file(&mut self, vps_id: u32, path: &Path) -> Result<()> {
        let key = file_key(vps_id, path)?;
        remove_key::<FileRuleKey, FileRule>(
            &mut self.typed_map(map_names::FILE_RULES)?,
            &key,
            map_names::FILE_RULES,
        )
    }

    /// Attach the network guards to VPS `vps_id`'s cgroup (before its first
    /// process runs) and tell them its address; deny the link-local
    /// metadata address by default.
    pub fn attach_guards(
        &mut self,
        cgroup_dir: &Path,
        cgroup_id: u64,
        vps_id: u32,
        ipv4: Option<std::net::Ipv4Addr>,
    ) -> Result<()> {
        let dir = std::fs::File::open(cgroup_dir).map_err(|source| KsalError::Path {
            path: cgroup_dir.display().to_string(),
            source,
        })?;
        let net = VpsNet {
            vps_id,
            ipv4_be: ipv4.map_or(0, |ip| u32::from_ne_bytes(ip.octets())),
        };
        self.typed_map(map_names::VPS_NET)?
            .insert(cgroup_id, net, 0)
            .map_err(map_err(map_names::VPS_NET))?;
        // Each program joins those on the cgroup, then whatever an earlier
        // daemon attached there goes: the hook is never without one.
        for &(program, hook, kind) in guard_hooks() {
            let prog = self
                .ebpf
                .program(program)
                .ok_or(KsalError::NoProgram(program))?;
            let fd = prog.fd().map_err(program_error(program, hook))?;
            let id = prog.info().map_err(program_error(program, hook))?.id();
            let attach_err = |source| KsalError::Attach {
                hook,
                cgroup: cgroup_dir.display().to_string(),
                source,
            };
            cgroup_attach::attach(dir.as_fd(), fd.as_fd(), kind).map_err(attach_err)?;
            cgroup_attach::detach_others(dir.as_fd(), kind, Some(id)).map_err(attach_err)?;
        }
        Ok(())
    }

    /// Make `rules` the rules of VPS `vps_id`: what is new is added, what
    /// is gone is removed; rules in both stay in force throughout.
    pub fn sync_rules(&mut self, vps_id: u32, rules: VpsRules) -> Result<()> {
        let old = self.applied.remove(&vps_id).unwrap_or_default();
        self.sync_map(map_names::FILE_RULES, &old.files, &rules.files)?;
        let mounts = |r: &VpsRules| -> Vec<(MountKey, u32)> {
            r.mount_types
                .iter()
                .map(|t| (MountKey { vps_id, fstype: *t }, 1))
                .collect()
        };
        self.sync_map(map_names::MOUNT_ALLOW, &mounts(&old), &mounts(&rules))?;
        let devices = |r: &VpsRules| -> Vec<(DeviceKey, u32)> {
            r.devices
                .iter()
                .map(|(k, a)| (DeviceKey { vps_id, ..*k }, *a))
                .collect()
        };
        self.sync_map(map_names::DEVICE_ALLOW, &devices(&old), &devices(&rules))?;
        let sysctls = |r: &VpsRules| -> Vec<(SysctlKey, u32)> {
            r.sysctls
                .iter()
                .map(|n| (SysctlKey { vps_id, name: *n }, 1))
                .collect()
        };
        self.sync_map(map_names::SYSCTL_ALLOW, &sysctls(&old), &sysctls(&rules))?;
        for e in &rules.egress {
            self.deny_egress(vps_id, e.net, e.prefix, e.port, e.rule_id)?;
        }
        for e in old.egress.iter().filter(|o| {
            !rules
                .egress
                .iter()
                .any(|n| (n.net, n.prefix) == (o.net, o.prefix))
        }) {
            self.allow_egress(vps_id, e.net, e.prefix)?;
        }
        self.applied.insert(vps_id, rules);
        Ok(())
    }

    /// Forget VPS `vps_id` entirely: its registration, address and rules.
    pub fn forget_vps(&mut self, cgroup_id: u64, vps_id: u32) {
        let _ = self.unregister_vps(cgroup_id);
        self.forget_address(cgroup_id);
        let _ = self.sync_rules(vps_id, VpsRules::default());
    }

    /// Forget VPS cgroup `cgroup_id`'s address. Its guard programs stay
    /// with the cgroup and go when it is removed.
    fn forget_address(&mut self, cgroup_id: u64) {
        if let Ok(mut m) = self.typed_map::<u64, VpsNet>(map_names::VPS_NET) {
            let _ = m.remove(&cgroup_id);
        }
    }

    /// After a restart with pinned maps: learn the rules a previous
    /// daemon left in them, so the next sync removes what is gone.
    fn recover_applied(&mut self) -> Result<()> {
        for (k, v) in self.entries::<FileRuleKey, FileRule>(map_names::FILE_RULES)? {
            self.applied.entry(k.vps_id).or_default().files.push((k, v));
        }
        let egress: Vec<(LpmKey<EgressKey>, EgressRule)> = self
            .egress_rules()?
            .iter()
            .filter_map(std::result::Result::ok)
            .collect();
        for (k, v) in egress {
            let data = k.data();
            self.applied
                .entry(u32::from_be(data.vps_id_be))
                .or_default()
                .egress
                .push(EgressDeny {
                    net: std::net::Ipv4Addr::from(data.ipv4_be.to_ne_bytes()),
                    prefix: (k.prefix_len().saturating_sub(32)) as u8,
                    port: v.port as u16,
                    rule_id: v.rule_id,
                });
        }
        for (k, _) in self.entries::<MountKey, u32>(map_names::MOUNT_ALLOW)? {
            let rules = self.applied.entry(k.vps_id).or_default();
            rules.mount_types.push(k.fstype);
        }
        for (k, v) in self.entries::<DeviceKey, u32>(map_names::DEVICE_ALLOW)? {
            self.applied
                .entry(k.vps_id)
                .or_default()
                .devices
                .push((k, v));
        }
        for (k, _) in self.entries::<SysctlKey, u32>(map_names::SYSCTL_ALLOW)? {
            self.applied
                .entry(k.vps_id)
                .or_default()
                .sysctls
                .push(k.name);
        }
        Ok(())
    }

    /// After adopting: forget every VPS not in `running` (cgroup id, VPS
    /// id): its registration, address, rules and pinned links.
    pub fn prune(&mut self, running: &[(u64, u32)]) {
        let live_cg = |cg: &u64| running.iter().any(|(c, _)| c == cg);
        let registered = self
            .entries::<u64, VpsEntry>(map_names::VPS)
            .unwrap_or_default();
        let addressed = self
            .entries::<u64, VpsNet>(map_names::VPS_NET)
            .unwrap_or_default();
        let cgroups = registered.iter().map(|(c, _)| *c);
        for cg in cgroups.chain(addressed.iter().map(|(c, _)| *c)) {
            if !live_cg(&cg) {
                tracing::info!(cgroup_id = cg, "removing what a gone VPS left in the KSAL");
                let _ = self.unregister_vps(cg);
                self.forget_address(cg);
            }
        }
        let ids: Vec<u32> = self.applied.keys().copied().collect();
        for id in ids {
            if !running.iter().any(|(_, v)| *v == id) {
                let _ = self.sync_rules(id, VpsRules::default());
                self.applied.remove(&id);
            }
        }
    }

    fn typed_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>> {
        let map = self.ebpf.map_mut(name).ok_or(KsalError::NoMap(name))?;
        HashMap::try_from(map).map_err(map_err(name))
    }

    /// Every entry of hash map `name`.
    fn entries<K: aya::Pod, V: aya::Pod>(&mut self, name: &'static str) -> Result<Vec<(K, V)>> {
        Ok(self
            .typed_map::<K, V>(name)?
            .iter()
            .filter_map(std::result::Result::ok)
            .collect())
    }

    /// Make `new` the entries of hash map `name` that were `old`: insert
    /// all of `new`, then remove the keys only `old` has.
    fn sync_map<K: aya::Pod + PartialEq, V: aya::Pod>(
        &mut self,
        name: &'static str,
        old: &[(K, V)],
        new: &[(K, V)],
    ) -> Result<()> {
        let mut map = self.typed_map::<K, V>(name)?;
        for (k, v) in new {
            map.insert(*k, *v, 0).map_err(map_err(name))?;
        }
        for (k, _) in old.iter().filter(|(k, _)| !new.iter().any(|(n, _)| n == k)) {
            remove_key(&mut map, k, name)?;
        }
        Ok(())
    }

    fn egress_rules(&mut self) -> Result<LpmTrie<&mut MapData, EgressKey, EgressRule>> {
        let map = self
            .ebpf
            .map_mut(map_names::EGRESS_RULES)
            .ok_or(KsalError::NoMap(map_names::EGRESS_RULES))?;
        LpmTrie::try_from(map).map_err(map_err(map_names::EGRESS_RULES))
    }

    fn egress_key(vps_id: u32, net: std::net::Ipv4Addr, prefix: u8) -> LpmKey<EgressKey> {
        LpmKey::new(
            32 + u32::from(prefix),
            EgressKey {
                vps_id_be: vps_id.to_be(),
                ipv4_be: u32::from_ne_bytes(net.octets()),
            },
        )
    }

    /// Deny VPS `vps_id` connections and datagrams to `net/prefix` (on
    /// `port`, or any port with 0).
    pub fn deny_egress(
        &mut self,
        vps_id: u32,
        net: std::net::Ipv4Addr,
        prefix: u8,
        port: u16,
        rule_id: u32,
    ) -> Result<()> {
        let key = Self::egress_key(vps_id, net, prefix);
        let rule = EgressRule {
            rule_id,
            port: u32::from(port),
        };
        self.egress_rules()?
            .insert(&key, rule, 0)
            .map_err(map_err(map_names::EGRESS_RULES))
    }

    pub fn allow_egress(&mut self, vps_id: u32, net: std::net::Ipv4Addr, prefix: u8) -> Result<()> {
        let key = Self::egress_key(vps_id, net, prefix);
        match self.egress_rules()?.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(map_names::EGRESS_RULES)(e)),
        }
    }

    /// Traffic counters of VPS `vps_id`, summed over CPUs.
    pub fn net_counters(&self, vps_id: u32) -> Result<NetCounters> {
        let map = self
            .ebpf
            .map(map_names::NET_COUNTERS)
            .ok_or(KsalError::NoMap(map_names::NET_COUNTERS))?;
        let counters: PerCpuHashMap<&MapData, u32, NetCounters> =
            PerCpuHashMap::try_from(map).map_err(map_err(map_names::NET_COUNTERS))?;
        let per_cpu = match counters.get(&vps_id, 0) {
            Ok(v) => v,
            Err(MapError::KeyNotFound) => return Ok(NetCounters::default()),
            Err(e) => return Err(map_err(map_names::NET_COUNTERS)(e)),
        };
        Ok(per_cpu.iter().fold(NetCounters::default(), |mut sum, c| {
            sum.rx_bytes += c.rx_bytes;
            sum.rx_packets += c.rx_packets;
            sum.tx_bytes += c.tx_bytes;
            sum.tx_packets += c.tx_packets;
            sum.spoofed_dropped += c.spoofed_dropped;
            sum
        }))
    }

    /// Take the event stream; there is one reader per loaded KSAL.
    pub fn take_events(&mut self) -> Result<EventReader> {
        let map = self
            .ebpf
            .take_map(map_names::EVENTS)
            .ok_or(KsalError::NoMap(map_names::EVENTS))?;
        let ring = RingBuf::try_from(map).map_err(map_err(map_names::EVENTS))?;
        Ok(EventReader::new(ring))
    }

    /// Events lost because the ring buffer was full, summed over CPUs.
    pub fn events_dropped(&self) -> Result<u64> {
        let map = self
            .ebpf
            .map(map_names::EVENTS_DROPPED)
            .ok_or(KsalError::NoMap(map_names::EVENTS_DROPPED))?;
        let counts: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(map_err(map_names::EVENTS_DROPPED))?;
        let per_cpu = counts
            .get(&0, 0)
            .map_err(map_err(map_names::EVENTS_DROPPED))?;
        Ok(per_cpu.iter().sum())
    }
}

/// Remove `key` from `map`; a key already gone is fine.
fn remove_key<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<&mut MapData, K, V>,
    key: &K,
    name: &'static str,
) -> Result<()> {
    match map.remove(key) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(map_err(name)(e)),
    }
}

fn program_error(
    program: &'static str,
    hook: &'static str,
) -> impl Fn(ProgramError) -> KsalError + Copy {
    move |source| KsalError::Program {
        program,
        hook,
        source,
    }
}

fn kernel_btf() -> Result<aya::Btf> {
    aya::Btf::from_sys_fs().map_err(|e| KsalError::Object(aya::EbpfError::BtfError(e)))
}

/// Find and verify-load the LSM program `program` for `hook`.
fn load_lsm<'a>(
    ebpf: &'a mut Ebpf,
    program: &'static str,
    hook: &'static str,
    btf: &aya::Btf,
) -> Result<&'a mut Lsm> {
    let prog: &mut Lsm = ebpf
        .program_mut(program)
        .ok_or(KsalError::NoProgram(program))?
        .try_into()
        .map_err(program_error(program, hook))?;
    prog.load(hook, btf).map_err(program_error(program, hook))?;
    Ok(prog)
}

fn file_key(vps_id: u32, path: &Path) -> Result<FileRuleKey> {
    let meta = std::fs::metadata(path).map_err(|source| KsalError::Path {
        path: path.display().to_string(),
        source,
    })?;
    Ok(file_key_of(vps_id, meta.dev(), meta.ino()))
}

/// The rule key of the file with userspace `st_dev` and `st_ino`.
pub fn file_key_of(vps_id: u32, st_dev: u64, ino: u64) -> FileRuleKey {
    FileRuleKey {
        vps_id,
        dev: kernel_dev(libc::major(st_dev), libc::minor(st_dev)),
        ino,
    }
}

/// How many guard programs are attached to the cgroup at `cgroup_dir`
/// (one per hook once a VPS is guarded; never two of a kind).
pub fn guard_programs(cgroup_dir: &Path) -> std::io::Result<usize> {
    let dir = std::fs::File::open(cgroup_dir)?;
    let mut n = 0;
    for (_, _, kind) in guard_hooks() {
        n += cgroup_attach::attached(dir.as_fd(), *kind)?.len();
    }
    Ok(n)
}

/// Try to load (not attach) the file_open LSM program: the only reliable
/// test of whether this kernel lets vzhost enforce LSM hooks.
pub fn probe_lsm() -> Result<()> {
    let mut ebpf = EbpfLoader::new().load(KSAL_OBJECT)?;
    load_lsm(
        &mut ebpf,
        program_names::FILE_OPEN,
        "file_open",
        &kernel_btf()?,
    )
    .map(|_| ())
}

/// Load the probe cgroup_skb program and attach it to `cgroup_dir` (a
/// cgroup v2 directory the caller created), then detach it.
pub fn probe_cgroup_attach(cgroup_dir: &Path) -> Result<()> {
    let program = program_names::CGROUP_PROBE;
    let hook = "cgroup_skb/egress";
    let wrap = program_error(program, hook);
    let mut ebpf = EbpfLoader::new().load(KSAL_OBJECT)?;
    let prog: &mut CgroupSkb = ebpf
        .program_mut(program)
        .ok_or(KsalError::NoProgram(program))?
        .try_into()
        .map_err(wrap)?;
    prog.load().map_err(wrap)?;
    let dir = std::fs::File::open(cgroup_dir).map_err(|source| KsalError::Path {
        path: cgroup_dir.display().to_string(),
        source,
    })?;
    let link = prog
        .attach(&dir, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
        .map_err(wrap)?;
    prog.detach(link).map_err(wrap)
}
