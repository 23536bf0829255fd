//! The seam between vzhost and the kernel: every raw system call that libc
//! and nix do not wrap goes through a wrapper here, and every wrapper goes
//! through [`dispatch`]. In unit tests a [`fake`] installed on the test's
//! thread sees each call in order and may answer it instead of the kernel,
//! so the order of operations (attach before detach, kill before cleanup)
//! is tested without root. Every `unsafe` of a raw call lives in this room.
mod bpf;
mod cgroup;
mod fs;
mod mount;
mod net;
mod path;
mod process;
mod pty;
mod seccomp;

#[cfg(test)]
pub mod fake;

use std::{ffi::CString, io, path::Path};

pub use bpf::{bpf_prog_attach, bpf_prog_detach, bpf_prog_get_fd_by_id, bpf_prog_query};
pub use cgroup::cgroup_kill;
pub use fs::{project_quota_on, project_usage, read_small, set_project, set_project_limit};
pub use mount::{clone_mount_in, idmap_readonly, move_mount_to, open_tree_clone};
pub use net::loopback_up;
pub use path::{openat2, stat_in};
pub use process::{
    cloexec_from, close_all_but, drop_capabilities, is_same_process, kill, pidfd_open,
    pidfd_send_signal, pidfd_wait_exit, pin_process, process_start_time, reap_orphans,
};
pub use pty::{
    pty_number, pty_peer, set_controlling_tty, set_window_size, unlock_pty, window_size,
};
pub use seccomp::refuse_unhooked_mount_calls;

/// One system call as the seam sees it: what a test double records and
/// answers. Only what tells one call from another is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    OpenTree { path: String },
    MountSetattr { attr_set: u64 },
    MoveMount { target: String },
    PidfdOpen { pid: u32 },
    PidfdSendSignal { signal: i32 },
    PidfdWait { timeout_ms: i32 },
    CloseRange { first: u32 },
    LoopbackUp,
    Openat2 { path: String, resolve: u64 },
    PtyNumber,
    PtyUnlock,
    PtyPeer,
    SetControllingTty,
    GetWindowSize,
    SetWindowSize { rows: u16, cols: u16 },
    BpfProgAttach { attach_type: u32 },
    BpfProgQuery { attach_type: u32 },
    BpfProgGetFdById { id: u32 },
    BpfProgDetach { attach_type: u32 },
    Kill { pid: u32, signal: i32 },
    CgroupKill { path: String },
    QuotaInfo,
    QuotaGet { project: u32 },
    QuotaSet { project: u32, blocks: u64 },
    SetProject { project: u32, directory: bool },
    CloseFds { first: u32, last: u32 },
    SeccompFilter { instructions: usize },
    DropCapabilities,
}

/// Run `real` (the raw call, returning the kernel's non-negative result),
/// unless a test's fake answers `call` first. `call` is only built when a
/// fake may look at it.
#[inline]
pub(crate) fn dispatch(
    call: impl FnOnce() -> Call,
    real: impl FnOnce() -> io::Result<i64>,
) -> io::Result<i64> {
    #[cfg(test)]
    if let Some(answer) = fake::answer(call()) {
        return answer;
    }
    #[cfg(not(test))]
    let _ = call;
    real()
}

/// [`dispatch`] for a call that answers with a list of ids.
#[inline]
pub(crate) fn dispatch_ids(
    call: impl FnOnce() -> Call,
    real: impl FnOnce() -> io::Result<Vec<u32>>,
) -> io::Result<Vec<u32>> {
    #[cfg(test)]
    if let Some(answer) = fake::answer_ids(call()) {
        return answer;
    }
    #[cfg(not(test))]
    let _ = call;
    real()
}

/// A raw syscall's return value as a result: negative means errno.
pub(crate) fn check(ret: libc::c_long) -> io::Result<i64> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}
