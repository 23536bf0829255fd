//! Filesystem calls nix does not wrap: project quotas (`quotactl_fd`), the
//! project id of an inode (`FS_IOC_FS{GET,SET}XATTR`), and closing every
//! descriptor but a few (`close_range`).
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, RawFd},
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

/// Close every descriptor of this process except `keep` (for a forked
/// process that must hold nothing of its parent's but what it was given).
pub fn close_all_but(keep: &[RawFd]) -> io::Result<()> {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut first: u32 = 0;
    for fd in keep.into_iter().filter_map(|fd| u32::try_from(fd).ok()) {
        if fd > first {
            close_range(first, fd - 1)?;
        }
        first = first.max(fd + 1);
    }
    close_range(first, u32::MAX)
}

fn close_range(first: u32, last: u32) -> io::Result<()> {
    dispatch(
        || Call::CloseFds { first, last },
        || {
            // SAFETY: plain syscall with integer arguments; the caller owns
            // the descriptors it closes.
            check(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) })
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Fake, ok};

    #[test]
    fn every_descriptor_but_the_kept_ones_is_closed() {
        let fake = Fake::install(|_| ok());
        close_all_but(&[0, 1, 2, 7, 5]).unwrap();
        assert_eq!(
            fake.calls(),
            [
                Call::CloseFds { first: 3, last: 4 },
                Call::CloseFds { first: 6, last: 6 },
                Call::CloseFds {
                    first: 8,
                    last: u32::MAX
                },
            ]
        );
    }

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
