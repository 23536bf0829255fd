//! What `vzhost doctor` (and the tests) try, to tell what this kernel lets
//! vzhost do: load an LSM program, attach a cgroup program, load the tc
//! program for VPS veths.
use std::path::Path;

use aya::{
    EbpfLoader,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
};
use ksal_common::{Hook, program_names};

use super::{
    error::{KsalError, Result, program_error},
    load::{kernel_btf, load_lsm},
    object::KSAL_OBJECT,
};

/// Try to load (not attach) the file_open LSM program: the only reliable
/// test of whether this kernel lets vzhost enforce LSM hooks.
pub fn probe_lsm() -> Result<()> {
    let mut ebpf = EbpfLoader::new().load(KSAL_OBJECT)?;
    load_lsm(
        &mut ebpf,
        program_names::FILE_OPEN,
        Hook::FileOpen.name(),
        &kernel_btf()?,
    )
    .map(|_| ())
}

/// Load the probe cgroup_skb program and attach it to `cgroup_dir` (a
/// cgroup v2 directory the caller created), then detach it.
pub fn probe_cgroup_attach(cgroup_dir: &Path) -> Result<()> {
    let program = program_names::CGROUP_PROBE;
    let wrap = program_error(program, Hook::SkbEgress.name());
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

/// Load (not attach) the tc program that guards VPS veths.
pub fn probe_tc() -> std::result::Result<(), String> {
    let mut ebpf = EbpfLoader::new()
        .load(KSAL_OBJECT)
        .map_err(|e| e.to_string())?;
    super::veth::load(&mut ebpf)
}
