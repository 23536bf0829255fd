//! Mount hooks: a VPS mounts only the filesystem types its policy allows,
//! and may be held to read-only remounts. Bind mounts and moves create no
//! new filesystem and are left to the kernel's own checks.
use aya_ebpf::{helpers::bpf_probe_read_kernel_str_bytes, macros::lsm, programs::LsmContext};
use ksal_common::{FSTYPE_LEN, Hook, MountKey, guard, guard_rule};

use crate::{
    guards::{deny, previous, vps_task},
    maps::MOUNT_ALLOW,
};

const MS_RDONLY: u64 = 1;
const MS_REMOUNT: u64 = 32;
const MS_BIND: u64 = 4096;
const MS_MOVE: u64 = 8192;
/// MS_UNBINDABLE | MS_PRIVATE | MS_SLAVE | MS_SHARED: propagation changes.
const MS_PROPAGATION: u64 = (1 << 17) | (1 << 18) | (1 << 19) | (1 << 20);

/// sb_mount(dev_name, path, type, flags, data)
#[lsm(hook = "sb_mount")]
pub fn ksal_sb_mount(ctx: LsmContext) -> i32 {
    let earlier = previous::<5>(&ctx);
    if earlier != 0 {
        return earlier;
    }
    let Some(scope) = vps_task() else {
        return 0;
    };
    let flags: u64 = ctx.arg(3);
    let guards = scope.vps.guards;
    if flags & MS_REMOUNT != 0 {
        if guards & guard::REMOUNT_READ_ONLY != 0 && flags & MS_RDONLY == 0 {
            return deny(
                &ctx,
                &scope,
                Hook::SbMount,
                guard_rule::REMOUNT_READ_ONLY,
                flags,
            );
        }
        return 0;
    }
    if flags & (MS_BIND | MS_MOVE | MS_PROPAGATION) != 0 || guards & guard::MOUNT_TYPES == 0 {
        return 0;
    }
    let fstype: *const u8 = ctx.arg(2);
    let mut key = MountKey {
        vps_id: scope.vps.vps_id,
        fstype: [0; FSTYPE_LEN],
    };
    // A type that does not fit (or cannot be read) matches no rule.
    // SAFETY: the helper copes with any kernel address.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(fstype, &mut key.fstype) };
    // SAFETY: plain-integer value.
    if unsafe { MOUNT_ALLOW.get(key) }.is_some() {
        return 0;
    }
    deny(&ctx, &scope, Hook::SbMount, guard_rule::MOUNT_TYPES, flags)
}
