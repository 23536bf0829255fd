//! Kernel hooks: module autoloading, bpf(), perf events. What a VPS may
//! never reach at all (module insertion, kexec, the clock, the kernel log)
//! the kernel already refuses it for lack of capabilities in the host's
//! user namespace, before any LSM hook runs.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use ksal_common::{Hook, guard, guard_rule};

use crate::guards::{deny, previous, vps_task};

/// The verdict of a hook whose earlier verdict is at argument `N`: that
/// verdict if it denied, else the VPS's guard `bit` decides.
#[inline(always)]
fn guarded<const N: usize>(ctx: &LsmContext, bit: u32, hook: Hook, rule: u32, object: u64) -> i32 {
    let earlier = previous::<N>(ctx);
    if earlier != 0 {
        return earlier;
    }
    match vps_task() {
        Some(scope) if scope.vps.guards & bit != 0 => deny(ctx, &scope, hook, rule, object),
        _ => 0,
    }
}

/// kernel_module_request(kmod_name): a VPS cannot make the kernel load a
/// module for it (a socket family, a link type, a filesystem).
#[lsm(hook = "kernel_module_request")]
pub fn ksal_kernel_module_request(ctx: LsmContext) -> i32 {
    guarded::<1>(
        &ctx,
        guard::MODULE_AUTOLOAD,
        Hook::ModuleRequest,
        guard_rule::MODULE_AUTOLOAD,
        0,
    )
}

/// bpf(cmd, attr, size) on kernels up to 6.15.
#[lsm(hook = "bpf")]
pub fn ksal_bpf3(ctx: LsmContext) -> i32 {
    let cmd: u64 = ctx.arg(0);
    guarded::<3>(&ctx, guard::BPF, Hook::Bpf, guard_rule::BPF, cmd)
}

/// bpf(cmd, attr, size, kernel) on later kernels.
#[lsm(hook = "bpf")]
pub fn ksal_bpf4(ctx: LsmContext) -> i32 {
    let cmd: u64 = ctx.arg(0);
    guarded::<4>(&ctx, guard::BPF, Hook::Bpf, guard_rule::BPF, cmd)
}

/// perf_event_open(type) on later kernels.
#[lsm(hook = "perf_event_open")]
pub fn ksal_perf_event_open1(ctx: LsmContext) -> i32 {
    guarded::<1>(
        &ctx,
        guard::PERF_EVENTS,
        Hook::PerfEventOpen,
        guard_rule::PERF_EVENTS,
        0,
    )
}

/// perf_event_open(attr, type) up to Linux 6.1 and a little after.
#[lsm(hook = "perf_event_open")]
pub fn ksal_perf_event_open2(ctx: LsmContext) -> i32 {
    guarded::<2>(
        &ctx,
        guard::PERF_EVENTS,
        Hook::PerfEventOpen,
        guard_rule::PERF_EVENTS,
        0,
    )
}
