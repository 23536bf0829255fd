//! Processes: pidfds (immune to pid reuse), identity by start time, and
//! close-on-exec of everything a VPS must not inherit.
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use super::{Call, check, dispatch};

/// A pidfd for `pid` (which need not be our child).
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let fd = dispatch(
        || Call::PidfdOpen { pid },
        || {
            // SAFETY: plain syscall with integer arguments.
            check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) })
        },
    )?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Send `signal` through a pidfd (immune to pid reuse).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    dispatch(
        || Call::PidfdSendSignal { signal },
        || {
            // SAFETY: a null siginfo is allowed; pidfd is an open pidfd.
            check(unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    signal,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            })
        },
    )?;
    Ok(())
}

/// Send `signal` to `pid` (for processes no pidfd is held for).
pub fn kill(pid: u32, signal: nix::sys::signal::Signal) -> io::Result<()> {
    dispatch(
        || Call::Kill {
            pid,
            signal: signal as i32,
        },
        || {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
                .map(|()| 0)
                .map_err(io::Error::from)
        },
    )?;
    Ok(())
}

/// Wait up to `timeout_ms` for the process behind `pidfd` to exit.
pub fn pidfd_wait_exit(pidfd: BorrowedFd<'_>, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    dispatch(
        || Call::PidfdWait { timeout_ms },
        || {
            // SAFETY: one valid pollfd for the duration of the call.
            check(unsafe { libc::poll(&mut pfd, 1, timeout_ms) }.into())
        },
    )
    .is_ok_and(|ready| ready == 1)
}

/// The start time (clock ticks since boot) of `pid`, from /proc/PID/stat;
/// None when it is gone or a zombie (dead, waiting to be reaped).
pub fn process_start_time(pid: u32) -> Option<u64> {
    let flags = nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC;
    let path = format!("/proc/{pid}/stat");
    let stat = super::read_small(
        nix::fcntl::open(path.as_str(), flags, nix::sys::stat::Mode::empty()).ok()?,
    )?;
    // comm may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether `pid` is alive and is the process that started at `start`.
pub fn is_same_process(pid: u32, start: u64) -> bool {
    process_start_time(pid) == Some(start)
}

/// A pidfd of the process `pid` that started at `start`, checked once
/// opened (from then on the pidfd pins that very process); None when it
/// is gone or the pid is someone else's now.
pub fn pin_process(pid: u32, start: u64) -> Option<OwnedFd> {
    pidfd_open(pid).ok().filter(|_| is_same_process(pid, start))
}

/// Whether a child whose /proc/PID/stat reads `stat` is a zombie this
/// process adopted rather than started: the children it starts are session
/// leaders (helpers) or in its own session `own_sid` (tools), and whoever
/// started them waits for them.
fn adopted_zombie(stat: &str, pid: u32, own_sid: u32) -> bool {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return false;
    };
    let mut fields = rest.split(' ');
    let state = fields.next();
    // ppid and pgrp, then the session.
    let session = fields.nth(2).and_then(|s| s.parse::<u32>().ok());
    state == Some("Z") && session.is_some_and(|s| s != pid && s != own_sid)
}

/// Reap the zombies this process adopted as a child subreaper (a VPS's
/// console keeper, once its launcher is gone), leaving alone the children
/// it started itself.
pub fn reap_orphans() {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let own_sid = nix::unistd::getsid(None).map_or(0, |s| s.as_raw() as u32);
    let tasks = std::fs::read_dir("/proc/self/task").into_iter().flatten();
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if adopted_zombie(&stat, pid, own_sid) {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG);
            }
        }
    }
}

/// Mark every fd from `first` up close-on-exec, so nothing the host had
/// open leaks into a VPS.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    dispatch(
        || Call::CloseRange { first },
        || close_range(first, u32::MAX, CLOSE_RANGE_CLOEXEC),
    )?;
    Ok(())
}

/// Close every descriptor of this process except `keep` (for a forked
/// process that must hold nothing of its parent's but what it was given).
pub fn close_all_but(keep: &[RawFd]) -> io::Result<()> {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut first: u32 = 0;
    let close = |first: u32, last: u32| {
        dispatch(
            || Call::CloseFds { first, last },
            || close_range(first, last, 0),
        )
    };
    for fd in keep.into_iter().filter_map(|fd| u32::try_from(fd).ok()) {
        if fd > first {
            close(first, fd - 1)?;
        }
        first = first.max(fd + 1);
    }
    close(first, u32::MAX)?;
    Ok(())
}

/// Give up every capability (effective, permitted, inheritable), for a
/// host process that keeps only descriptors it already holds.
pub fn drop_capabilities() -> io::Result<()> {
    // The kernel's capability ABI (linux/capability.h), version 3: two
    // 32-bit words per set.
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let none = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    dispatch(
        || Call::DropCapabilities,
        || {
            // SAFETY: capset reads one header and two data words through
            // the pointers, both valid for the call.
            check(unsafe { libc::syscall(libc::SYS_capset, &raw const header, none.as_ptr()) })
        },
    )?;
    Ok(())
}

fn close_range(first: u32, last: u32, flags: libc::c_uint) -> io::Result<i64> {
    // SAFETY: plain syscall with integer arguments; the caller owns the
    // descriptors it closes or marks.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) })
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
    fn only_adopted_zombies_are_reaped() {
        let stat = |state, sid| format!("40 (vz hk) {state} 1 30 {sid} 0 -1");
        // A console keeper: in its dead launcher's session.
        assert!(adopted_zombie(&stat("Z", 30), 40, 7));
        // Alive, a helper leading its own session, a tool in ours.
        assert!(!adopted_zombie(&stat("S", 30), 40, 7));
        assert!(!adopted_zombie(&stat("Z", 40), 40, 7));
        assert!(!adopted_zombie(&stat("Z", 7), 40, 7));
        assert!(!adopted_zombie("", 40, 7));
    }

    #[test]
    fn own_start_time_is_stable() {
        let me = std::process::id();
        let t = process_start_time(me).expect("own stat");
        assert!(is_same_process(me, t));
        assert!(!is_same_process(me, t + 1));
        assert!(process_start_time(u32::MAX).is_none());
    }
}
