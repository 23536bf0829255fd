//! bpf(2) commands aya does not offer in the form vzhost needs: cgroup
//! attachments made with BPF_PROG_ATTACH (BPF_F_ALLOW_MULTI), which the
//! kernel keeps on the cgroup whatever becomes of the process that made
//! them, and the query and detach that replace them.
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use super::{Call, check, dispatch, dispatch_ids};

const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_F_ALLOW_MULTI: u32 = 2;
/// More programs than this on one hook of one cgroup are not listed.
const QUERY_MAX: usize = 64;

/// `union bpf_attr`, as bytes: every command here uses its first words.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }
    fn u32_at(mut self, at: usize, v: u32) -> Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64_at(mut self, at: usize, v: u64) -> Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn read_u32(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: attr is a valid, writable bpf_attr of the size passed; any
    // pointer in it refers to a buffer the caller keeps alive.
    check(unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) })
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd() as u32
}

/// Attach `prog` to `cgroup` at `attach_type`, beside what is there.
pub fn bpf_prog_attach(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<()> {
    dispatch(
        || Call::BpfProgAttach { attach_type },
        || {
            // target_fd, attach_bpf_fd, attach_type, attach_flags
            let mut attr = Attr::new()
                .u32_at(0, fd_u32(cgroup))
                .u32_at(4, fd_u32(prog))
                .u32_at(8, attach_type)
                .u32_at(12, BPF_F_ALLOW_MULTI);
            bpf(BPF_PROG_ATTACH, &mut attr)
        },
    )?;
    Ok(())
}

/// Ids of the programs attached to `cgroup` at `attach_type`.
pub fn bpf_prog_query(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<Vec<u32>> {
    dispatch_ids(
        || Call::BpfProgQuery { attach_type },
        || {
            let mut ids = [0u32; QUERY_MAX];
            // target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt
            let mut attr = Attr::new()
                .u32_at(0, fd_u32(cgroup))
                .u32_at(4, attach_type)
                .u64_at(16, ids.as_mut_ptr() as u64)
                .u32_at(24, QUERY_MAX as u32);
            bpf(BPF_PROG_QUERY, &mut attr)?;
            let n = (attr.read_u32(24) as usize).min(QUERY_MAX);
            Ok(ids[..n].to_vec())
        },
    )
}

/// A descriptor of the loaded program with id `id`.
pub fn bpf_prog_get_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let fd = dispatch(
        || Call::BpfProgGetFdById { id },
        || bpf(BPF_PROG_GET_FD_BY_ID, &mut Attr::new().u32_at(0, id)),
    )?;
    // SAFETY: a new fd the kernel just gave us, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Detach `prog` from `cgroup` at `attach_type`.
pub fn bpf_prog_detach(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<()> {
    dispatch(
        || Call::BpfProgDetach { attach_type },
        || {
            let mut attr = Attr::new()
                .u32_at(0, fd_u32(cgroup))
                .u32_at(4, fd_u32(prog))
                .u32_at(8, attach_type);
            bpf(BPF_PROG_DETACH, &mut attr)
        },
    )?;
    Ok(())
}
