//! File hooks: deny opening inodes a VPS's policy lists. Rules are keyed by
//! (device, inode), so symlinks, hard links and bind mounts reach the same
//! rule as the path the policy named. The other ways to change or replace
//! a file are in `inodes`; what they share is here.
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};
use aya_log_ebpf::warn;
use ksal_common::{FileRule, FileRuleKey, Hook, access, guard};

use crate::{
    events,
    guards::EPERM,
    maps::FILE_RULES,
    scope::{self, Scope},
};

const FMODE_READ: u32 = 0x1;
const FMODE_WRITE: u32 = 0x2;

#[lsm(hook = "file_open")]
pub fn ksal_file_open(ctx: LsmContext) -> i32 {
    // An earlier LSM program's denial stands.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let denied = try_file_open(&ctx).unwrap_or_else(|err| {
        // The offsets come from this kernel's BTF: a failed read means a
        // layout vzhost did not expect. The open is left to the kernel.
        warn!(
            &ctx,
            "file_open: cannot read struct file fields (error {})", err
        );
        false
    });
    verdict(denied)
}

/// A hook's return value for a decision (a constant, which the verifier
/// can see is a valid LSM return value).
#[inline(always)]
pub fn verdict(denied: bool) -> i32 {
    if denied { -EPERM } else { 0 }
}

/// Read a field at a runtime offset from a kernel pointer.
#[inline(always)]
pub fn read_at<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copes with any address; a bad one yields
    // an error, never a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
}

/// The rule `scope`'s VPS has on `inode` (a `struct inode *`), with the
/// inode number events report.
#[inline(always)]
fn rule_of(scope: &Scope, inode: *const u8) -> Result<Option<(FileRule, u64)>, i32> {
    if inode.is_null() || scope.vps.guards & guard::FILE_RULES == 0 {
        return Ok(None);
    }
    let layout = &scope.config.layout;
    let ino: u64 = read_at(inode, layout.inode_i_ino)?;
    let sb: *const u8 = read_at(inode, layout.inode_i_sb)?;
    let dev: u32 = read_at(sb, layout.super_block_s_dev)?;
    let key = FileRuleKey {
        vps_id: scope.vps.vps_id,
        dev,
        ino,
    };
    // SAFETY: plain-integer value; see scope::current.
    Ok(unsafe { FILE_RULES.get(key) }.map(|rule| (*rule, ino)))
}

/// The rule on `inode` that rules out any of `wanted`, if one does.
#[inline(always)]
fn ruling(scope: &Scope, inode: *const u8, wanted: u32) -> Result<Option<(FileRule, u64)>, i32> {
    Ok(rule_of(scope, inode)?.filter(|(rule, _)| rule.access & wanted != 0))
}

/// The first rule on the inodes of `dentries` (`struct dentry *`, null for
/// none) that rules out any of `wanted`. Lookups only: the caller records
/// one event, whichever dentry it was.
#[inline(always)]
pub fn dentry_rule(
    scope: &Scope,
    dentries: [*const u8; 2],
    wanted: u32,
) -> Result<Option<(FileRule, u64)>, i32> {
    for dentry in dentries {
        if dentry.is_null() {
            continue;
        }
        let inode: *const u8 = read_at(dentry, scope.config.layout.dentry_d_inode)?;
        if let Some(found) = ruling(scope, inode, wanted)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The rule that keeps the name at `path` (a `struct path *`) uncovered:
/// a protected file or a directory above one.
#[inline(always)]
pub fn mountpoint_rule(scope: &Scope, path: *const u8) -> Option<(FileRule, u64)> {
    let dentry = read_at::<*const u8>(path, scope.config.layout.path_dentry).ok()?;
    dentry_rule(scope, [dentry, core::ptr::null()], access::NAME)
        .ok()
        .flatten()
}

/// Whether `hook` denies an action on `dentries` that rules out `wanted`.
#[inline(always)]
pub fn guard_dentries(ctx: &LsmContext, hook: Hook, dentries: [*const u8; 2], wanted: u32) -> bool {
    let Some(scope) = scope::current().filter(|s| s.vps.guards & guard::FILE_RULES != 0) else {
        return false;
    };
    match dentry_rule(&scope, dentries, wanted) {
        Ok(Some((rule, ino))) => events::rule_out(ctx, &scope, hook, rule.rule_id, ino),
        Ok(None) => false,
        Err(err) => {
            warn!(
                ctx,
                "{}: cannot read struct dentry (error {})", hook as u32, err
            );
            false
        }
    }
}

fn try_file_open(ctx: &LsmContext) -> Result<bool, i32> {
    let Some(scope) = scope::current().filter(|s| s.vps.guards & guard::FILE_RULES != 0) else {
        return Ok(false);
    };
    let layout = &scope.config.layout;
    let file: *const u8 = ctx.arg(0);
    let inode: *const u8 = read_at(file, layout.file_f_inode)?;
    let f_mode: u32 = read_at(file, layout.file_f_mode)?;
    let mut wanted = 0;
    if f_mode & FMODE_READ != 0 {
        wanted |= access::READ;
    }
    if f_mode & FMODE_WRITE != 0 {
        wanted |= access::WRITE;
    }
    // An open for neither (O_PATH-like) still counts as "open".
    if wanted == 0 {
        wanted = access::ANY;
    }
    Ok(match ruling(&scope, inode, wanted)? {
        Some((rule, ino)) => events::rule_out(ctx, &scope, Hook::FileOpen, rule.rule_id, ino),
        None => false,
    })
}
