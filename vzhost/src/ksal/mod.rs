//! The host side of the Kernel Service Abstraction Layer: load the embedded
//! eBPF object, tell it the kernel's struct layout and the VPS cgroup level,
//! attach the hooks, register VPSs and their rules, and read events.
//!
//! Files by concern: `error` (what can fail), `object` (the embedded
//! object, checked against the hook table of `ksal-common`), `load`
//! (loading, attaching, the guards on VPS cgroups), `rules` (a VPS's rules
//! as map entries, the plan from old rules to new: pure) and `maps`
//! (carrying those plans out), `counters` (traffic, events), `probe`
//! (what `doctor` tries), `veth` (the tc program on each VPS's veth),
//! `btf`, `pins`, `cgroup_attach`, `kernel_fs`.
pub mod btf;
mod cgroup_attach;
mod counters;
mod error;
mod events;
pub mod kernel_fs;
mod load;
mod maps;
mod object;
pub mod pins;
mod probe;
mod rules;
mod veth;

use ksal_common::{FileRuleKey, kernel_dev};

pub use cgroup_attach::AttachError;
pub use error::{KsalError, Result};
pub use events::{EventCounts, EventLog, EventReader, KsalEvent, LoggedEvent};
pub use load::guard_programs;
pub use probe::{probe_cgroup_attach, probe_lsm, probe_tc};
pub use rules::{EgressDeny, VpsRules};

/// The loaded and attached KSAL.
pub struct Ksal {
    ebpf: aya::Ebpf,
    /// The LSM links: pinned, or (without a pin directory) held here for
    /// as long as the KSAL lives.
    _lsm_links: pins::Links,
    /// The rules in the maps, by VPS id, so a reload removes what went.
    applied: std::collections::HashMap<u32, VpsRules>,
    /// The programs' own log, until the event reader takes it.
    kernel_log: Option<events::KernelLogger>,
    /// Why the tc program for VPS veths is not loaded, if it is not.
    tc_error: Option<String>,
}

/// The rule key of the file with userspace `st_dev` and `st_ino`.
pub fn file_key_of(vps_id: u32, st_dev: u64, ino: u64) -> FileRuleKey {
    FileRuleKey {
        vps_id,
        dev: kernel_dev(libc::major(st_dev), libc::minor(st_dev)),
        ino,
    }
}
