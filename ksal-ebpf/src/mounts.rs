//! Mount hooks: a VPS mounts only the filesystem types its policy allows,
//! and may be held to read-only remounts. Types are checked where a new
//! superblock is about to be mounted (sb_kern_mount: mount(2) and
//! fsconfig(FSCONFIG_CMD_CREATE) alike) and, earlier, on mount(2)'s type
//! string. Bind mounts and moves create no new filesystem; they are only
//! kept off the names file rules protect.
use aya_ebpf::{helpers::bpf_probe_read_kernel_str_bytes, macros::lsm, programs::LsmContext};
use ksal_common::{FSTYPE_LEN, Hook, MountKey, guard, guard_rule};

use crate::{
    files::{mountpoint_rule, read_at},
    guards::{deny, host_root, previous, vps_task},
    maps::MOUNT_ALLOW,
    scope::{self, Scope},
};

const MS_RDONLY: u64 = 1;
const MS_REMOUNT: u64 = 32;
const MS_BIND: u64 = 4096;
const MS_MOVE: u64 = 8192;
/// MS_UNBINDABLE | MS_PRIVATE | MS_SLAVE | MS_SHARED: propagation changes.
const MS_PROPAGATION: u64 = (1 << 17) | (1 << 18) | (1 << 19) | (1 << 20);

/// Whether `scope`'s VPS may mount filesystems of the type named by the
/// kernel string at `fstype`. A type that does not fit (or cannot be
/// read) matches no rule.
#[inline(always)]
fn type_allowed(scope: &Scope, fstype: *const u8) -> bool {
    let mut key = MountKey {
        vps_id: scope.vps.vps_id,
        fstype: [0; FSTYPE_LEN],
    };
    // SAFETY: the helper copes with any kernel address.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(fstype, &mut key.fstype) };
    // SAFETY: plain-integer value.
    unsafe { MOUNT_ALLOW.get(key) }.is_some()
}

/// The guard rule of `scope`'s VPS that rules out mount(2) with `flags`
/// of type `fstype`, if one does. Host root passes (see `vps_task`).
#[inline(always)]
fn mount_guard(scope: &Scope, flags: u64, fstype: *const u8) -> Option<u32> {
    if host_root() {
        return None;
    }
    let guards = scope.vps.guards;
    if flags & MS_REMOUNT != 0 {
        return (guards & guard::REMOUNT_READ_ONLY != 0 && flags & MS_RDONLY == 0)
            .then_some(guard_rule::REMOUNT_READ_ONLY);
    }
    if flags & (MS_BIND | MS_MOVE | MS_PROPAGATION) != 0 || guards & guard::MOUNT_TYPES == 0 {
        return None;
    }
    (!type_allowed(scope, fstype)).then_some(guard_rule::MOUNT_TYPES)
}

/// sb_mount(dev_name, path, type, flags, data). One event per denial:
/// covering a protected name first, else the mount guards.
#[lsm(hook = "sb_mount")]
pub fn ksal_sb_mount(ctx: LsmContext) -> i32 {
    let earlier = previous::<5>(&ctx);
    if earlier != 0 {
        return earlier;
    }
    let Some(scope) = scope::current() else {
        return 0;
    };
    let flags: u64 = ctx.arg(3);
    let over = if flags & (MS_REMOUNT | MS_PROPAGATION) == 0 {
        mountpoint_rule(&scope, ctx.arg(1))
    } else {
        None
    };
    let (rule, object) = match over {
        Some((rule, ino)) => (rule.rule_id, ino),
        None => match mount_guard(&scope, flags, ctx.arg(2)) {
            Some(rule) => (rule, flags),
            None => return 0,
        },
    };
    deny(&ctx, &scope, Hook::SbMount, rule, object)
}

/// sb_kern_mount(sb): a new superblock, from mount(2) or from fsconfig(2)
/// (fsopen + FSCONFIG_CMD_CREATE, before fsmount hands out a mount fd that
/// could be used without ever being attached). Not reached by the kernel's
/// own internal mounts (fc_mount, e.g. mqueue for a new IPC namespace).
/// The type is the filesystem's own name (a FUSE subtype mounts as "fuse").
#[lsm(hook = "sb_kern_mount")]
pub fn ksal_sb_kern_mount(ctx: LsmContext) -> i32 {
    let earlier = previous::<1>(&ctx);
    if earlier != 0 {
        return earlier;
    }
    let Some(scope) = vps_task() else {
        return 0;
    };
    if scope.vps.guards & guard::MOUNT_TYPES == 0 {
        return 0;
    }
    let layout = &scope.config.layout;
    let sb: *const u8 = ctx.arg(0);
    let name = read_at::<*const u8>(sb, layout.super_block_s_type)
        .and_then(|fs_type| read_at::<*const u8>(fs_type, layout.file_system_type_name));
    if let Ok(name) = name
        && type_allowed(&scope, name)
    {
        return 0;
    }
    deny(&ctx, &scope, Hook::SbKernMount, guard_rule::MOUNT_TYPES, 0)
}

/// move_mount(from_path, to_path): move_mount(2) of a detached tree (from
/// open_tree or fsmount, whose superblock sb_kern_mount already saw) or of
/// an attached one. Kept off the names file rules protect.
#[lsm(hook = "move_mount")]
pub fn ksal_move_mount(ctx: LsmContext) -> i32 {
    let earlier = previous::<2>(&ctx);
    if earlier != 0 {
        return earlier;
    }
    let Some(scope) = scope::current() else {
        return 0;
    };
    match mountpoint_rule(&scope, ctx.arg(1)) {
        Some((rule, ino)) => deny(&ctx, &scope, Hook::MoveMount, rule.rule_id, ino),
        None => 0,
    }
}
