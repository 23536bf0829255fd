//! Denial and audit records to the host through the ring buffer.
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns},
};
use aya_log_ebpf::{error, warn};
use ksal_common::{COMM_LEN, EVENTS_PER_SECOND, Event, EventRate, Hook, mode, verdict};

use crate::{
    maps::{EVENT_RATE, EVENTS, EVENTS_DROPPED},
    scope::Scope,
};

const SECOND_NS: u64 = 1_000_000_000;

/// Count a dropped event; how many this CPU has dropped so far.
fn dropped() -> u64 {
    match EVENTS_DROPPED.get_ptr_mut(0) {
        Some(dropped) => {
            // SAFETY: per-CPU slot, valid for the program's run.
            let dropped = unsafe { &mut *dropped };
            *dropped += 1;
            *dropped
        }
        None => 0,
    }
}

/// Whether VPS `vps_id` may send one more event now (per CPU, per second).
#[inline(always)]
fn within_budget<C: EbpfContext>(ctx: &C, vps_id: u32, now: u64) -> bool {
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
            if EVENT_RATE.insert(vps_id, fresh, 0).is_err() {
                // Only when the table (one slot per VPS id) is full.
                error!(ctx, "KSAL_EVENT_RATE full: VPS {} sends unbudgeted", vps_id);
            }
            true
        }
    }
}

/// Who an event is about: the VPS and, for hooks that run in a task's
/// context, the task.
pub struct Subject {
    pub vps_id: u32,
    pub cgroup_id: u64,
    pub mode: u32,
    pub pid_tgid: u64,
    pub comm: [u8; COMM_LEN],
}

/// Record an action the VPS's policy rules out: a denial in enforce mode
/// (true: deny it), an audit record in audit mode (false: let it be).
#[inline(always)]
pub fn rule_out<C: EbpfContext>(
    ctx: &C,
    scope: &Scope,
    hook: Hook,
    rule_id: u32,
    object: u64,
) -> bool {
    let subject = Subject {
        vps_id: scope.vps.vps_id,
        cgroup_id: scope.cgroup_id,
        mode: scope.vps.mode,
        pid_tgid: bpf_get_current_pid_tgid(),
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    ruled_out(ctx, &subject, hook, rule_id, object)
}

/// As `rule_out`, for a `subject` the caller describes (tc programs run
/// outside any task: theirs name no process).
#[inline(always)]
pub fn ruled_out<C: EbpfContext>(
    ctx: &C,
    subject: &Subject,
    hook: Hook,
    rule_id: u32,
    object: u64,
) -> bool {
    if subject.mode == mode::AUDIT {
        emit(ctx, subject, hook, rule_id, verdict::AUDITED, object);
        return false;
    }
    emit(ctx, subject, hook, rule_id, verdict::DENIED, object);
    true
}

#[inline(always)]
fn emit<C: EbpfContext>(
    ctx: &C,
    subject: &Subject,
    hook: Hook,
    rule_id: u32,
    verdict: u32,
    object: u64,
) {
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if !within_budget(ctx, subject.vps_id, now) {
        dropped();
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        // Logged at the 1st, 2nd, 4th, 8th... drop on this CPU: a full
        // ring is rare, and a log line per drop would only add load.
        let n = dropped();
        if n.is_power_of_two() {
            warn!(
                ctx,
                "KSAL event ring buffer full: {} events dropped on this CPU", n
            );
        }
        return;
    };
    entry.write(Event {
        ktime_ns: now,
        cgroup_id: subject.cgroup_id,
        object,
        vps_id: subject.vps_id,
        hook: hook as u32,
        rule_id,
        verdict,
        pid: subject.pid_tgid as u32,
        tgid: (subject.pid_tgid >> 32) as u32,
        comm: subject.comm,
    });
    entry.submit(0);
}
