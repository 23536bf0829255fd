//! File hooks: deny opening inodes a VPS's policy lists. Rules are keyed by
//! (device, inode), so symlinks, hard links and bind mounts reach the same
//! rule as the path the policy named.
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};
use aya_log_ebpf::warn;
use ksal_common::{FileRuleKey, Hook, access};

use crate::{events, maps::FILE_RULES, scope};

const FMODE_READ: u32 = 0x1;
const FMODE_WRITE: u32 = 0x2;
const EPERM: i32 = 1;

#[lsm(hook = "file_open")]
pub fn ksal_file_open(ctx: LsmContext) -> i32 {
    // An earlier LSM program's denial stands.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    try_file_open(&ctx).unwrap_or_else(|err| {
        // The offsets come from this kernel's BTF: a failed read means a
        // layout vzhost did not expect. The open is left to the kernel.
        warn!(
            &ctx,
            "file_open: cannot read struct file fields (error {})", err
        );
        0
    })
}

/// Read a field at a runtime offset from a kernel pointer.
#[inline(always)]
fn read_at<T>(base: *const u8, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copes with any address; a bad one yields
    // an error, never a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
}

fn try_file_open(ctx: &LsmContext) -> Result<i32, i32> {
    let Some(scope) = scope::current() else {
        return Ok(0);
    };
    let layout = &scope.config.layout;
    let file: *const u8 = ctx.arg(0);
    let inode: *const u8 = read_at(file, layout.file_f_inode)?;
    let f_mode: u32 = read_at(file, layout.file_f_mode)?;
    let ino: u64 = read_at(inode, layout.inode_i_ino)?;
    let sb: *const u8 = read_at(inode, layout.inode_i_sb)?;
    let dev: u32 = read_at(sb, layout.super_block_s_dev)?;

    let key = FileRuleKey {
        vps_id: scope.vps.vps_id,
        dev,
        ino,
    };
    // SAFETY: plain-integer value; see scope::current.
    let Some(rule) = (unsafe { FILE_RULES.get(key) }) else {
        return Ok(0);
    };
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
    if rule.access & wanted == 0 {
        return Ok(0);
    }
    if events::rule_out(ctx, &scope, Hook::FileOpen, rule.rule_id, ino) {
        Ok(-EPERM)
    } else {
        Ok(0)
    }
}
