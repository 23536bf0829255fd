//! What the LSM guards share: honour an earlier program's verdict, find
//! the VPS, and deny (or, in audit mode, allow) with an event.
use aya_ebpf::{helpers::bpf_get_current_uid_gid, programs::LsmContext};
use ksal_common::Hook;

use crate::{events, scope::Scope};

pub const EPERM: i32 = 1;

/// The verdict for a guarded action of `scope`'s VPS that its policy
/// denies: -EPERM and a denial event in enforce mode, 0 and an audit
/// record in audit mode.
#[inline(always)]
pub fn deny(ctx: &LsmContext, scope: &Scope, hook: Hook, rule_id: u32, object: u64) -> i32 {
    if events::rule_out(ctx, scope, hook, rule_id, object) {
        -EPERM
    } else {
        0
    }
}

/// The earlier verdict in the return slot at argument `N` of the hook.
#[inline(always)]
pub fn previous<const N: usize>(ctx: &LsmContext) -> i32 {
    ctx.arg(N)
}

/// The VPS of the current task, unless the task runs as host root (uid 0
/// is never mapped into a VPS): vzhost's own launch and attach helpers
/// pass through the VPS cgroup as host root before they become VPS root.
#[inline(always)]
pub fn vps_task() -> Option<Scope> {
    if host_root() {
        return None;
    }
    crate::scope::current()
}

/// Whether the current task runs as host root (see [`vps_task`]).
#[inline(always)]
pub fn host_root() -> bool {
    bpf_get_current_uid_gid() as u32 == 0
}
