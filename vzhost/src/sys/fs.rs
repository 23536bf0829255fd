//! Filesystem calls nix does not wrap: project quotas (`quotactl_fd`) and
//! the project id of an inode (`FS_IOC_FS{GET,SET}XATTR`); and the reading
//! of a small kernel-made file (procfs, cgroupfs) in one read.
use std::{
    io,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd},
};

use super::{Call, check, dispatch};

const PRJQUOTA: u32 = 2;
const Q_GETINFO: u32 = 0x80_0005;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
const QIF_BLIMITS: u32 = 1;
/// Quota block limits count in units of this many bytes.
const QUOTA_BLOCK: u64 = 1024;
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_XFLAG_PROJINHERIT: u32 = 0x200;

/// `struct fsxattr`.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

fn quotactl(dir: BorrowedFd<'_>, cmd: u32, id: u32, addr: *mut libc::c_void) -> io::Result<i64> {
    // SAFETY: every caller passes a buffer of the type `cmd` expects; dir
    // is an open fd on the filesystem in question.
    check(unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            dir.as_raw_fd(),
            (cmd << 8) | PRJQUOTA,
            id,
            addr,
        )
    })
}

/// Whether the filesystem holding `dir` enforces project quotas.
pub fn project_quota_on(dir: BorrowedFd<'_>) -> bool {
    let mut info = [0u8; 64];
    dispatch(
        || Call::QuotaInfo,
        || quotactl(dir, Q_GETINFO, 0, info.as_mut_ptr().cast()),
    )
    .is_ok()
}

/// Bytes charged to `project` on the filesystem holding `dir`.
pub fn project_usage(dir: BorrowedFd<'_>, project: u32) -> io::Result<u64> {
    // SAFETY: dqblk is plain old data; all zeroes is a valid value.
    let mut q: libc::dqblk = unsafe { std::mem::zeroed() };
    dispatch(
        || Call::QuotaGet { project },
        || quotactl(dir, Q_GETQUOTA, project, (&raw mut q).cast()),
    )?;
    Ok(q.dqb_curspace)
}

/// Limit `project` on the filesystem holding `dir` to `bytes`.
pub fn set_project_limit(dir: BorrowedFd<'_>, project: u32, bytes: u64) -> io::Result<()> {
    // SAFETY: as in project_usage.
    let mut q: libc::dqblk = unsafe { std::mem::zeroed() };
    q.dqb_bhardlimit = bytes.div_ceil(QUOTA_BLOCK);
    q.dqb_bsoftlimit = q.dqb_bhardlimit;
    q.dqb_valid = QIF_BLIMITS;
    let blocks = q.dqb_bhardlimit;
    dispatch(
        || Call::QuotaSet { project, blocks },
        || quotactl(dir, Q_SETQUOTA, project, (&raw mut q).cast()),
    )?;
    Ok(())
}

/// Put the inode open at `fd` into `project`; a directory also passes
/// the project on to what is created in it.
pub fn set_project(fd: BorrowedFd<'_>, project: u32, directory: bool) -> io::Result<()> {
    dispatch(
        || Call::SetProject { project, directory },
        || {
            let mut x = FsXattr::default();
            // SAFETY: FsXattr is struct fsxattr, which this ioctl fills.
            check(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, &raw mut x) }.into())?;
            x.projid = project;
            if directory {
                x.xflags |= FS_XFLAG_PROJINHERIT;
            }
            // SAFETY: FsXattr is struct fsxattr, which this ioctl reads.
            check(unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR, &raw const x) }.into())
        },
    )?;
    Ok(())
}

/// The text of an open procfs or cgroupfs file of a few lines. The kernel
/// hands such a file over whole in one read, so a read that does not fill
/// the buffer is the end: one read per file, where `read_to_string` adds a
/// stat, a seek and a second read. Scrapes read thousands of them.
pub fn read_small(fd: impl AsFd) -> Option<String> {
    let mut text = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let n = nix::unistd::read(&fd, &mut buf).ok()?;
        text.extend_from_slice(&buf[..n]);
        if n < buf.len() {
            return String::from_utf8(text).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Fake, ok};

    #[test]
    fn limits_are_set_in_quota_blocks_rounded_up() {
        let fake = Fake::install(|_| ok());
        let dir = std::fs::File::open(".").unwrap();
        set_project_limit(std::os::fd::AsFd::as_fd(&dir), 7, 1025).unwrap();
        assert_eq!(
            fake.calls(),
            [Call::QuotaSet {
                project: 7,
                blocks: 2
            }]
        );
    }
}
