//! Loading the KSAL: the object with its maps (pinned, or taken over from
//! a previous daemon), the kernel's struct layout, the LSM hooks that fit
//! this kernel, and the guard programs each VPS cgroup carries.
use std::{os::fd::AsFd as _, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{Lsm, Program},
};
use ksal_common::{Attach, Config, HOOKS, HookDef, VpsNet, map_names};

use super::{
    Ksal, btf,
    cgroup_attach::{self, Guard},
    error::{KsalError, Result, map_err, program_error},
    events,
    object::KSAL_OBJECT,
    pins,
};

/// Every guard program of a VPS cgroup: (hook, program, attach type).
fn cgroup_programs() -> impl Iterator<Item = (&'static str, &'static str, u32)> {
    HOOKS.iter().flat_map(|h| {
        h.programs.iter().filter_map(move |p| match p.attach {
            Attach::Cgroup { attach_type } => Some((h.name, p.name, attach_type)),
            Attach::Lsm { .. } | Attach::Tc => None,
        })
    })
}

/// The program of LSM hook `hook` that fits this kernel, whose hook takes
/// `nargs()` arguments (asked only when the hook has variants).
fn lsm_program(hook: &HookDef, nargs: impl FnOnce() -> Result<u32>) -> Result<&'static str> {
    if let [only] = hook.programs
        && only.attach == (Attach::Lsm { nargs: 0 })
    {
        return Ok(only.name);
    }
    let n = nargs()?;
    hook.programs
        .iter()
        .find(|p| p.attach == Attach::Lsm { nargs: n })
        .map(|p| p.name)
        .ok_or(KsalError::HookSignature {
            hook: hook.name,
            nargs: n,
        })
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
        // Taken before any program loads: they refer to its map.
        let kernel_log = events::kernel_logger(&mut ebpf);
        configure(
            &mut ebpf,
            Config {
                vps_cgroup_level,
                ready: 1,
                layout,
            },
        )?;
        let mut links = pins::Links::new(pins);
        if lsm {
            let aya_btf = kernel_btf()?;
            for hook in HOOKS.iter().filter(|h| h.is_lsm()) {
                let program = lsm_program(hook, || {
                    Ok(btf_reader.func_params(&format!("bpf_lsm_{}", hook.name))?)
                })?;
                let prog = load_lsm(&mut ebpf, program, hook.name, &aya_btf)?;
                let wrap = program_error(program, hook.name);
                let id = prog.attach().map_err(wrap)?;
                let link = prog.take_link(id).map_err(wrap)?;
                links
                    .keep(&format!("lsm/{}", hook.name), link.into())
                    .map_err(pin_err)?;
            }
        }
        for (hook, program, _) in cgroup_programs() {
            load_cgroup(&mut ebpf, program, hook)?;
        }
        let tc_error = super::veth::load(&mut ebpf).err();
        if let Some(why) = &tc_error {
            tracing::error!("VPS veths cannot be guarded: {why}");
        }
        tracing::info!(vps_cgroup_level, ?layout, lsm, pins = ?pins, "KSAL loaded");
        let mut ksal = Self {
            ebpf,
            _lsm_links: links,
            applied: std::collections::HashMap::new(),
            kernel_log,
            tc_error,
        };
        ksal.recover_applied()?;
        Ok(ksal)
    }

    /// Attach the guards to VPS `vps_id`'s cgroup (before its first process
    /// runs), taking over from what an earlier daemon attached there, and
    /// tell them its address.
    pub fn attach_guards(
        &mut self,
        cgroup_dir: &Path,
        cgroup_id: u64,
        vps_id: u32,
        (ipv4, ipv6): (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>),
    ) -> Result<()> {
        let dir = open_dir(cgroup_dir)?;
        let mut ipv6_be = [0u32; 4];
        if let Some(ip) = ipv6 {
            for (word, bytes) in ipv6_be.iter_mut().zip(ip.octets().chunks_exact(4)) {
                *word = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            }
        }
        let net = VpsNet {
            vps_id,
            ipv4_be: ipv4.map_or(0, |ip| u32::from_ne_bytes(ip.octets())),
            ipv6_be,
        };
        self.typed_map(map_names::VPS_NET)?
            .insert(cgroup_id, net, 0)
            .map_err(map_err(map_names::VPS_NET))?;
        let mut guards = Vec::new();
        for (hook, program, attach_type) in cgroup_programs() {
            let wrap = program_error(program, hook);
            let prog = self
                .ebpf
                .program(program)
                .ok_or(KsalError::NoProgram(program))?;
            guards.push(Guard {
                program,
                fd: prog.fd().map_err(wrap)?.as_fd(),
                id: prog.info().map_err(wrap)?.id(),
                attach_type,
            });
        }
        cgroup_attach::take_over(dir.as_fd(), &guards).map_err(|source| KsalError::Attach {
            cgroup: cgroup_dir.display().to_string(),
            source,
        })
    }
}

/// How many guard programs are attached to the cgroup at `cgroup_dir`
/// (one per hook once a VPS is guarded; never two of a kind).
pub fn guard_programs(cgroup_dir: &Path) -> Result<usize> {
    let dir = open_dir(cgroup_dir)?;
    let mut n = 0;
    for (_, _, attach_type) in cgroup_programs() {
        n += cgroup_attach::attached(dir.as_fd(), attach_type)
            .map_err(|source| KsalError::Attach {
                cgroup: cgroup_dir.display().to_string(),
                source,
            })?
            .len();
    }
    Ok(n)
}

fn open_dir(dir: &Path) -> Result<std::fs::File> {
    std::fs::File::open(dir).map_err(|source| KsalError::Path {
        path: dir.display().to_string(),
        source,
    })
}

/// Fill in the programs' configuration; until then they allow everything.
fn configure(ebpf: &mut Ebpf, config: Config) -> Result<()> {
    let map = ebpf
        .map_mut(map_names::CONFIG)
        .ok_or(KsalError::NoMap(map_names::CONFIG))?;
    let mut array: Array<&mut MapData, Config> =
        Array::try_from(map).map_err(map_err(map_names::CONFIG))?;
    array.set(0, config, 0).map_err(map_err(map_names::CONFIG))
}

fn load_cgroup(ebpf: &mut Ebpf, program: &'static str, hook: &'static str) -> Result<()> {
    let loaded = match ebpf
        .program_mut(program)
        .ok_or(KsalError::NoProgram(program))?
    {
        Program::CgroupSkb(p) => p.load(),
        Program::CgroupSockAddr(p) => p.load(),
        Program::CgroupDevice(p) => p.load(),
        Program::CgroupSysctl(p) => p.load(),
        _ => Err(aya::programs::ProgramError::UnexpectedProgramType),
    };
    loaded.map_err(program_error(program, hook))
}

pub(super) fn kernel_btf() -> Result<aya::Btf> {
    aya::Btf::from_sys_fs().map_err(|e| KsalError::Object(aya::EbpfError::BtfError(e)))
}

/// Find and verify-load the LSM program `program` for `hook`.
pub(super) fn load_lsm<'a>(
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

#[cfg(test)]
mod tests {
    use ksal_common::{Hook, program_names};

    use super::*;

    #[test]
    fn a_hook_with_one_program_needs_no_look_at_the_kernel() {
        let asked = std::cell::Cell::new(false);
        let nargs = || {
            asked.set(true);
            Ok(9)
        };
        assert_eq!(
            lsm_program(Hook::FileOpen.def(), nargs).unwrap(),
            program_names::FILE_OPEN
        );
        assert!(!asked.get());
    }

    #[test]
    fn a_hook_whose_signature_changed_gets_the_program_for_this_kernel() {
        let bpf = Hook::Bpf.def();
        assert_eq!(lsm_program(bpf, || Ok(3)).unwrap(), program_names::BPF3);
        assert_eq!(lsm_program(bpf, || Ok(4)).unwrap(), program_names::BPF4);
        let perf = Hook::PerfEventOpen.def();
        assert_eq!(
            lsm_program(perf, || Ok(2)).unwrap(),
            program_names::PERF_EVENT_OPEN2
        );
        let err = lsm_program(bpf, || Ok(5)).unwrap_err().to_string();
        assert!(err.contains("bpf") && err.contains("5 arguments"), "{err}");
    }

    #[test]
    fn every_vps_cgroup_gets_each_cgroup_program_once() {
        let programs: Vec<_> = cgroup_programs().collect();
        assert_eq!(programs.len(), 10);
        for (i, (_, name, at)) in programs.iter().enumerate() {
            assert!(
                programs[i + 1..]
                    .iter()
                    .all(|(_, n, a)| n != name && a != at),
                "{name}: one program per attach type"
            );
        }
        assert!(
            programs
                .iter()
                .any(|(h, n, _)| *h == "connect" && *n == program_names::CONNECT6)
        );
        assert!(
            !programs
                .iter()
                .any(|(_, n, _)| *n == program_names::CGROUP_PROBE)
        );
    }
}
