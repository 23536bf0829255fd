//! What else changes a file or swaps it out, besides an open for write
//! (`files`): truncation (truncate, ftruncate and O_TRUNC, even with
//! O_RDONLY, all reach inode_setattr), chmod, chown, utimes, extended
//! attributes, and renaming, unlinking or linking it. A rule with
//! `access::WRITE` holds the content and attributes; `access::NAME` (write
//! rules and the directories above their files) holds the name.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use ksal_common::{Hook, access};

use crate::{
    files::{guard_dentries, verdict},
    guards::previous,
};

const NONE: *const u8 = core::ptr::null();

/// The verdict of an inode hook whose earlier verdict is argument `N`.
#[inline(always)]
fn inode_hook<const N: usize>(
    ctx: &LsmContext,
    hook: Hook,
    dentries: [*const u8; 2],
    wanted: u32,
) -> i32 {
    let earlier = previous::<N>(ctx);
    if earlier != 0 {
        return earlier;
    }
    verdict(guard_dentries(ctx, hook, dentries, wanted))
}

/// inode_setattr(dentry, attr) up to Linux 6.2.
#[lsm(hook = "inode_setattr")]
pub fn ksal_inode_setattr2(ctx: LsmContext) -> i32 {
    inode_hook::<2>(&ctx, Hook::InodeSetattr, [ctx.arg(0), NONE], access::WRITE)
}

/// inode_setattr(idmap, dentry, attr) from Linux 6.3.
#[lsm(hook = "inode_setattr")]
pub fn ksal_inode_setattr3(ctx: LsmContext) -> i32 {
    inode_hook::<3>(&ctx, Hook::InodeSetattr, [ctx.arg(1), NONE], access::WRITE)
}

/// inode_rename(old_dir, old_dentry, new_dir, new_dentry): the file moved
/// away, or another moved over it (RENAME_EXCHANGE calls it both ways).
#[lsm(hook = "inode_rename")]
pub fn ksal_inode_rename(ctx: LsmContext) -> i32 {
    inode_hook::<4>(
        &ctx,
        Hook::InodeRename,
        [ctx.arg(1), ctx.arg(3)],
        access::NAME,
    )
}

/// inode_unlink(dir, dentry).
#[lsm(hook = "inode_unlink")]
pub fn ksal_inode_unlink(ctx: LsmContext) -> i32 {
    inode_hook::<2>(&ctx, Hook::InodeUnlink, [ctx.arg(1), NONE], access::NAME)
}

/// inode_link(old_dentry, dir, new_dentry). Harmless for the content (the
/// rule follows the inode), denied so the file keeps the one name the
/// policy knows: a second name would outlive a reload that moves the rule.
#[lsm(hook = "inode_link")]
pub fn ksal_inode_link(ctx: LsmContext) -> i32 {
    inode_hook::<3>(&ctx, Hook::InodeLink, [ctx.arg(0), NONE], access::NAME)
}

/// inode_setxattr(idmap, dentry, name, value, size, flags): e.g. file
/// capabilities on a protected binary.
#[lsm(hook = "inode_setxattr")]
pub fn ksal_inode_setxattr(ctx: LsmContext) -> i32 {
    inode_hook::<6>(&ctx, Hook::InodeSetxattr, [ctx.arg(1), NONE], access::WRITE)
}

/// inode_removexattr(idmap, dentry, name).
#[lsm(hook = "inode_removexattr")]
pub fn ksal_inode_removexattr(ctx: LsmContext) -> i32 {
    inode_hook::<3>(
        &ctx,
        Hook::InodeRemovexattr,
        [ctx.arg(1), NONE],
        access::WRITE,
    )
}
