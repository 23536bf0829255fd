//! Capabilities a VPS may not use even where its own user namespace
//! grants them (its root holds every capability there).
use aya_ebpf::{macros::lsm, programs::LsmContext};
use aya_log_ebpf::warn;
use ksal_common::{Hook, guard_rule};

use crate::guards::{deny, previous, vps_task};

/// capable(cred, ns, cap, opts)
#[lsm(hook = "capable")]
pub fn ksal_capable(ctx: LsmContext) -> i32 {
    let earlier = previous::<4>(&ctx);
    if earlier != 0 {
        return earlier;
    }
    let cap: i32 = ctx.arg(2);
    if !(0..64).contains(&cap) {
        // No capability has such a number: leave it to the kernel.
        warn!(&ctx, "capable: unexpected capability number {}", cap);
        return 0;
    }
    let Some(scope) = vps_task() else {
        return 0;
    };
    if scope.vps.caps_denied & (1u64 << cap) == 0 {
        return 0;
    }
    deny(
        &ctx,
        &scope,
        Hook::Capable,
        guard_rule::CAPABILITIES,
        cap as u64,
    )
}
