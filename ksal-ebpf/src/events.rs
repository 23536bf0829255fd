//! Denial and audit records to the host through the ring buffer.
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns,
};
use ksal_common::{EVENTS_PER_SECOND, Event, EventRate, Hook, mode, verdict};

use crate::{
    maps::{EVENT_RATE, EVENTS, EVENTS_DROPPED},
    scope::Scope,
};

const SECOND_NS: u64 = 1_000_000_000;

fn dropped() {
    if let Some(dropped) = EVENTS_DROPPED.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, valid for the program's run.
        unsafe { *dropped += 1 };
    }
}

/// Whether VPS `vps_id` may send one more event now (per CPU, per second).
#[inline(always)]
fn within_budget(vps_id: u32, now: u64) -> bool {
    match EVENT_RATE.get_ptr_mut(vps_id) {
        Some(rate) => {
            // SAFETY: this CPU's slot, ours for the program's run.
            let rate = unsafe { &mut *rate };
            if now.wrapping_sub(rate.window_ns) >= SECOND_NS {
                rate.window_ns = now;
                rate.sent = 0;
            }
            rate.sent += 1;
            rate.sent <= EVENTS_PER_SECOND
        }
        None => {
            let fresh = EventRate {
                window_ns: now,
                sent: 1,
            };
            let _ = EVENT_RATE.insert(vps_id, fresh, 0);
            true
        }
    }
}

/// Record an action the VPS's policy rules out: a denial in enforce mode
/// (true: deny it), an audit record in audit mode (false: let it be).
#[inline(always)]
pub fn rule_out(scope: &Scope, hook: Hook, rule_id: u32, object: u64) -> bool {
    if scope.vps.mode == mode::AUDIT {
        emit(scope, hook, rule_id, verdict::AUDITED, object);
        return false;
    }
    emit(scope, hook, rule_id, verdict::DENIED, object);
    true
}

#[inline(always)]
pub fn emit(scope: &Scope, hook: Hook, rule_id: u32, verdict: u32, object: u64) {
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if !within_budget(scope.vps.vps_id, now) {
        dropped();
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        dropped();
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    entry.write(Event {
        ktime_ns: now,
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
