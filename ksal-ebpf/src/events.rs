//! Denial and audit records to the host through the ring buffer.
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns,
};
use ksal_common::{Event, Hook};

use crate::{
    maps::{EVENTS, EVENTS_DROPPED},
    scope::Scope,
};

#[inline(always)]
pub fn emit(scope: &Scope, hook: Hook, rule_id: u32, verdict: u32, object: u64) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        if let Some(dropped) = EVENTS_DROPPED.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, valid for the program's run.
            unsafe { *dropped += 1 };
        }
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    entry.write(Event {
        // SAFETY: plain helper call without arguments.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id: scope.cgroup_id,
        object,
        vps_id: scope.vps.vps_id,
        hook: hook as u32,
        rule_id,
        verdict,
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or_default(),
    });
    entry.submit(0);
}
