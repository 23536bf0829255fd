//! The tc program on the host side of each VPS's veth: loaded with the
//! KSAL, attached as a cls_bpf filter on the veth's clsact ingress (the
//! frames the VPS sends). A netlink filter lives with the interface, not
//! with this process: it outlives a daemon crash and goes when the veth
//! is deleted. A restarted daemon replaces it in place with its own.
use aya::programs::{
    SchedClassifier, TcAttachType,
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
};
use ksal_common::{Hook, VethEntry, map_names, program_names};

use super::{
    Ksal,
    error::{KsalError, Result, map_err, program_error},
};

/// Where the filter sits on the veth's ingress, so a new daemon finds and
/// replaces the old one's.
const PRIORITY: u16 = 1;
const HANDLE: TcHandle = TcHandle::new(0, 1);

/// Load the tc program; why not, when this kernel refuses it.
pub(super) fn load(ebpf: &mut aya::Ebpf) -> std::result::Result<(), String> {
    program(ebpf)
        .and_then(|p| {
            p.load().map_err(program_error(
                program_names::VETH_EGRESS,
                Hook::VethEgress.name(),
            ))
        })
        .map_err(|e| e.to_string())
}

fn program(ebpf: &mut aya::Ebpf) -> Result<&mut SchedClassifier> {
    let name = program_names::VETH_EGRESS;
    ebpf.program_mut(name)
        .ok_or(KsalError::NoProgram(name))?
        .try_into()
        .map_err(program_error(name, Hook::VethEgress.name()))
}

impl Ksal {
    /// Why the tc program is not loaded, if it is not.
    pub fn veth_error(&self) -> Option<&str> {
        self.tc_error.as_deref()
    }

    /// Check every frame sent through the VPS veth `ifname` (host side,
    /// index `ifindex`) against `entry`: its entry first, then the
    /// filter, replacing an earlier daemon's in place.
    pub fn attach_veth(&mut self, ifname: &str, ifindex: u32, entry: VethEntry) -> Result<()> {
        if let Some(why) = &self.tc_error {
            return Err(KsalError::NoVethProgram(why.clone()));
        }
        let veth_err = |source| KsalError::Veth {
            veth: ifname.to_owned(),
            source,
        };
        self.typed_map(map_names::VETH)?
            .insert(ifindex, entry, 0)
            .map_err(map_err(map_names::VETH))?;
        // Already there when a daemon takes over a running VPS.
        let _ = tc::qdisc_add_clsact(ifname);
        let prog = program(&mut self.ebpf)?;
        let earlier =
            SchedClassifierLink::attached(ifname, TcAttachType::Ingress, PRIORITY, HANDLE, None)
                .map_err(|e| veth_err(aya::programs::ProgramError::IOError(e)))?;
        let id = match prog.attach_to_link(earlier) {
            Ok(id) => id,
            Err(_) => prog
                .attach_with_options(
                    ifname,
                    TcAttachType::Ingress,
                    TcAttachOptions::Netlink(NlOptions {
                        priority: PRIORITY,
                        handle: HANDLE,
                        ..Default::default()
                    }),
                )
                .map_err(veth_err)?,
        };
        let link = prog.take_link(id).map_err(veth_err)?;
        // The filter must stay when this process goes (dropping the link
        // would delete it); it holds no descriptor, only its address.
        std::mem::forget(link);
        Ok(())
    }

    /// Forget the veth entries of VPS cgroup `cgroup_id` (its veth, and
    /// with it the filter, goes with the VPS).
    pub(super) fn forget_veths(&mut self, cgroup_id: u64) {
        if let Ok(mut m) = self.typed_map::<u32, VethEntry>(map_names::VETH) {
            let gone: Vec<u32> = m
                .iter()
                .filter_map(std::result::Result::ok)
                .filter(|(_, e)| e.cgroup_id == cgroup_id)
                .map(|(k, _)| k)
                .collect();
            for k in gone {
                let _ = m.remove(&k);
            }
        }
    }

    /// cgroups of the VPSs that have a veth entry.
    pub(super) fn veth_cgroups(&mut self) -> Vec<u64> {
        self.typed_map::<u32, VethEntry>(map_names::VETH)
            .map(|m| {
                m.iter()
                    .filter_map(std::result::Result::ok)
                    .map(|(_, e)| e.cgroup_id)
                    .collect()
            })
            .unwrap_or_default()
    }
}
