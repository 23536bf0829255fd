//! cgroup programs attached the way that outlives the daemon: with
//! BPF_PROG_ATTACH (BPF_F_ALLOW_MULTI) the kernel keeps the program on the
//! VPS cgroup until it is detached or the cgroup is removed, whatever
//! becomes of the process that attached it. (bpf_link attachments die
//! with their last fd, and some hosts refuse to pin links.)
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `enum bpf_attach_type` values of the hooks vzhost uses.
pub mod attach_type {
    pub const INET_INGRESS: u32 = 0;
    pub const INET_EGRESS: u32 = 1;
    pub const DEVICE: u32 = 6;
    pub const INET4_BIND: u32 = 8;
    pub const INET6_BIND: u32 = 9;
    pub const INET4_CONNECT: u32 = 10;
    pub const INET6_CONNECT: u32 = 11;
    pub const UDP4_SENDMSG: u32 = 14;
    pub const UDP6_SENDMSG: u32 = 15;
    pub const SYSCTL: u32 = 18;
}

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

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, writable bpf_attr of the size passed.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Attach `prog` to `cgroup` at `kind`, beside what is there.
pub fn attach(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>, kind: u32) -> io::Result<()> {
    // attach: target_fd, attach_bpf_fd, attach_type, attach_flags
    let mut attr = Attr::new()
        .u32_at(0, cgroup.as_raw_fd() as u32)
        .u32_at(4, prog.as_raw_fd() as u32)
        .u32_at(8, kind)
        .u32_at(12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut attr).map(|_| ())
}

/// Ids of the programs attached to `cgroup` at `kind`.
pub fn attached(cgroup: BorrowedFd<'_>, kind: u32) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; 64];
    // query: target_fd, attach_type, query_flags, attach_flags, prog_ids, prog_cnt
    let mut attr = Attr::new()
        .u32_at(0, cgroup.as_raw_fd() as u32)
        .u32_at(4, kind)
        .u64_at(16, ids.as_mut_ptr() as u64)
        .u32_at(24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut attr)?;
    let n = (attr.read_u32(24) as usize).min(ids.len());
    Ok(ids[..n].to_vec())
}

/// Detach the program with id `id` from `cgroup` at `kind`.
pub fn detach_id(cgroup: BorrowedFd<'_>, kind: u32, id: u32) -> io::Result<()> {
    let mut attr = Attr::new().u32_at(0, id);
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: a new fd the kernel just gave us.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut attr = Attr::new()
        .u32_at(0, cgroup.as_raw_fd() as u32)
        .u32_at(4, prog.as_raw_fd() as u32)
        .u32_at(8, kind);
    bpf(BPF_PROG_DETACH, &mut attr).map(|_| ())
}

/// Detach from `cgroup` at `kind` every program but `keep`: what an
/// earlier daemon attached is replaced only once the new one is in place.
pub fn detach_others(cgroup: BorrowedFd<'_>, kind: u32, keep: Option<u32>) -> io::Result<()> {
    for id in attached(cgroup, kind)? {
        if Some(id) != keep {
            detach_id(cgroup, kind, id)?;
        }
    }
    Ok(())
}
