//! cgroup hooks on what the kernel keeps per cgroup: device access (open
//! and mknod of device nodes) and sysctl writes. Each allows everything
//! until the VPS's policy turns its guard on, then only what the policy's
//! allowlist holds. cgroup programs return 1 to allow and 0 to deny.
use aya_ebpf::{
    EbpfContext,
    helpers::generated::bpf_sysctl_get_name,
    macros::{cgroup_device, cgroup_sysctl},
    programs::{DeviceContext, SysctlContext},
};
use ksal_common::{ANY_MINOR, DeviceKey, Hook, SYSCTL_NAME_LEN, SysctlKey, guard, guard_rule};

use crate::{
    events,
    maps::{DEVICE_ALLOW, SYSCTL_ALLOW},
    scope::{self, Scope},
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[inline(always)]
fn deny<C: EbpfContext>(ctx: &C, scope: &Scope, hook: Hook, rule: u32, object: u64) -> i32 {
    if events::rule_out(ctx, scope, hook, rule, object) {
        DENY
    } else {
        ALLOW
    }
}

#[cgroup_device]
pub fn ksal_device(ctx: DeviceContext) -> i32 {
    let Some(scope) = scope::current() else {
        return ALLOW;
    };
    if scope.vps.guards & guard::DEVICES == 0 {
        return ALLOW;
    }
    // SAFETY: the context pointer is valid for the program's run.
    let dev = unsafe { &*ctx.device };
    let kind = dev.access_type & 0xffff;
    let access = dev.access_type >> 16;
    let mut key = DeviceKey {
        vps_id: scope.vps.vps_id,
        kind,
        major: dev.major,
        minor: dev.minor,
    };
    // SAFETY: plain-integer values.
    let mut allowed = unsafe { DEVICE_ALLOW.get(key) }.copied().unwrap_or(0);
    key.minor = ANY_MINOR;
    // SAFETY: as above.
    allowed |= unsafe { DEVICE_ALLOW.get(key) }.copied().unwrap_or(0);
    if allowed & access == access {
        return ALLOW;
    }
    let object = (u64::from(kind) << 56)
        | (u64::from(access) << 48)
        | (u64::from(dev.major) << 24)
        | u64::from(dev.minor & 0xff_ffff);
    deny(&ctx, &scope, Hook::Device, guard_rule::DEVICES, object)
}

#[cgroup_sysctl]
pub fn ksal_sysctl(ctx: SysctlContext) -> i32 {
    let Some(scope) = scope::current() else {
        return ALLOW;
    };
    // SAFETY: the context pointer is valid for the program's run.
    if scope.vps.guards & guard::SYSCTL == 0 || unsafe { (*ctx.sysctl).write } == 0 {
        return ALLOW;
    }
    let mut key = SysctlKey {
        vps_id: scope.vps.vps_id,
        name: [0; SYSCTL_NAME_LEN],
    };
    // SAFETY: the helper writes at most SYSCTL_NAME_LEN bytes, NUL included;
    // flags 0 asks for the full path under /proc/sys.
    let len = unsafe {
        bpf_sysctl_get_name(
            ctx.sysctl,
            key.name.as_mut_ptr().cast(),
            SYSCTL_NAME_LEN as u64,
            0,
        )
    };
    // SAFETY: plain-integer value.
    if len > 0 && unsafe { SYSCTL_ALLOW.get(key) }.is_some() {
        return ALLOW;
    }
    deny(&ctx, &scope, Hook::Sysctl, guard_rule::SYSCTL, 0)
}
