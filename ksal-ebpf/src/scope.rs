//! Which VPS, if any, the current task belongs to.
use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use ksal_common::{Config, VpsEntry};

use crate::maps::{CONFIG, VPS};

pub struct Scope {
    pub config: &'static Config,
    pub cgroup_id: u64,
    pub vps: &'static VpsEntry,
}

/// The current task's VPS, keyed by its cgroup ancestor at the VPS level so
/// that child cgroups created inside a VPS are still that VPS.
#[inline(always)]
pub fn current() -> Option<Scope> {
    let config = CONFIG.get(0)?;
    if config.ready == 0 {
        return None;
    }
    // SAFETY: a plain helper call; it returns 0 when the task sits above
    // the requested level, which no VPS entry uses.
    let cgroup_id = unsafe { bpf_get_current_ancestor_cgroup_id(config.vps_cgroup_level as i32) };
    // SAFETY: values are plain integers; the host only inserts or removes
    // whole entries, so a read never sees a torn value we act on unsafely.
    let vps = unsafe { VPS.get(cgroup_id) }?;
    Some(Scope {
        config,
        cgroup_id,
        vps,
    })
}
