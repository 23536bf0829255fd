//! The helper protocol. The daemon is multi-threaded, so it never forks to
//! work on a VPS: it re-executes its own binary as a short-lived helper,
//! in a session of its own, and waits for it.
//!
//! Each gets a socket from the daemon at fd [`SOCKET_FD`]:
//!
//! - `vzhost __launch` reads a [`LaunchPlan`] (JSON) on stdin, builds the
//!   VPS's PID 1 and prints its host pid on stdout; PID 1 keeps the socket
//!   and waits on it for the go (see [`super::launch`]).
//! - `vzhost __attach PLAN`, PLAN an [`AttachPlan`] (JSON), joins a running
//!   VPS and reports on its SOCK_SEQPACKET socket: `ready` (with the pty
//!   master it allocated inside the VPS, when the plan asks for a
//!   terminal) or `failed` with a kind and a message. It then runs the
//!   command and exits with its status. Its stdio are whatever the daemon
//!   gave it (pipes of its own making, never a caller's descriptors).
//!
//! This module holds both sides: the daemon's spawn functions and the
//! helpers' entry points, which `main` calls before any argument parsing.
use std::{
    ffi::OsStr,
    io::{self, IoSlice, IoSliceMut, Read as _, Write as _},
    os::{
        fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
        unix::process::{CommandExt as _, ExitStatusExt as _},
    },
    path::Path,
    process::{Child, Command, ExitCode, ExitStatus, Stdio},
    time::Duration,
};

use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::socket::{
        AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
        sendmsg, socketpair,
    },
};
use serde::{Deserialize, Serialize};

use super::{attach::AttachPlan, launch::LaunchPlan};
use crate::model::ErrorKind;

pub const LAUNCH: &str = "__launch";
pub const ATTACH: &str = "__attach";

/// Where a helper finds the socket the daemon gave it.
pub const SOCKET_FD: RawFd = 3;
/// How long the daemon waits for the attach helper to join the VPS.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// A report's size on the wire at most (messages are cut to fit).
const MAX_REPORT: usize = 4096;

/// What the attach helper tells the daemon once it has joined the VPS, or
/// failed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Report {
    /// Joined; the pty master comes with it when the plan asked for one.
    Ready,
    Failed {
        kind: ErrorKind,
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("cannot run the helper {exe} {which}: {source}")]
    Spawn {
        which: &'static str,
        exe: String,
        source: io::Error,
    },
    #[error("talking to the {which} helper: {source}")]
    Io {
        which: &'static str,
        source: io::Error,
    },
    /// What the launcher printed when it failed.
    #[error("{0}")]
    Launch(String),
    /// What the attach helper reported when it failed.
    #[error("{message}")]
    Failed { kind: ErrorKind, message: String },
    #[error("the attach helper did not join the VPS within {0:?}; it was stopped")]
    Timeout(Duration),
    #[error("the attach helper ended without a word (see the daemon's log)")]
    Silent,
    #[error("the command in the VPS did not finish within {0:?}; it was killed")]
    TooSlow(Duration),
}

impl HelperError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Failed { kind, .. } => *kind,
            Self::Launch(_) => ErrorKind::Kernel,
            Self::Spawn { .. } | Self::Io { .. } | Self::Timeout(_) | Self::Silent => {
                ErrorKind::Internal
            }
            Self::TooSlow(_) => ErrorKind::Conflict,
        }
    }
}

fn io_err(which: &'static str) -> impl FnOnce(io::Error) -> HelperError {
    move |source| HelperError::Io { which, source }
}

/// A command re-executing vzhost as helper `which`, in a session of its
/// own so no VPS process shares the daemon's terminal.
fn command(exe: &Path, which: &'static str) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg(which);
    // SAFETY: setsid is async-signal-safe and affects only the child.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            Ok(())
        });
    }
    cmd
}

/// Spawn `cmd` with `socket` as its [`SOCKET_FD`]; this process's copy
/// is closed once the child has its own.
fn spawn(
    mut cmd: Command,
    exe: &Path,
    which: &'static str,
    socket: OwnedFd,
) -> Result<Child, HelperError> {
    let raw = socket.as_raw_fd();
    // SAFETY: dup2 and fcntl are async-signal-safe; `raw` stays open
    // (owned by `socket`) until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if raw == SOCKET_FD {
                nix::fcntl::fcntl(
                    BorrowedFd::borrow_raw(raw),
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
            } else if libc::dup2(raw, SOCKET_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| HelperError::Spawn {
        which,
        exe: exe.display().to_string(),
        source,
    });
    drop(socket);
    child
}

/// A pair of connected sockets of `kind`, close-on-exec.
fn socket_pair(which: &'static str, kind: SockType) -> Result<(OwnedFd, OwnedFd), HelperError> {
    socketpair(AddressFamily::Unix, kind, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| io_err(which)(e.into()))
}

/// An exit status as a shell reports it: the code, or 128 + the signal.
pub fn status_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Build the VPS that `plan` describes; returns the host pid of its PID 1
/// and the daemon's end of the go socket PID 1 waits on.
pub fn launch(exe: &Path, plan: &LaunchPlan) -> Result<(u32, OwnedFd), HelperError> {
    let (go, theirs) = socket_pair(LAUNCH, SockType::Stream)?;
    let mut cmd = command(exe, LAUNCH);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(cmd, exe, LAUNCH, theirs)?;
    let json = serde_json::to_vec(plan).expect("plan serializes");
    if let Some(mut stdin) = child.stdin.take() {
        // A launcher that died early is reported by its status below.
        let _ = stdin.write_all(&json);
    }
    // PID 1 hands its stdio over to the console before it waits, so these
    // pipes close when the launcher exits.
    let out = child.wait_with_output().map_err(io_err(LAUNCH))?;
    if !out.status.success() {
        return Err(HelperError::Launch(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    let pid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| HelperError::Launch("the launcher reported no init pid".into()))?;
    Ok((pid, go))
}

/// A command running inside a VPS, seen from the daemon.
pub struct Attached {
    child: Child,
    /// The master of the pty the command runs on, if the plan asked for one.
    pub master: Option<OwnedFd>,
}

impl Attached {
    /// Wait for the command; its exit status as a shell reports it.
    pub fn wait(mut self) -> io::Result<i32> {
        self.child.wait().map(status_code)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `plan`'s command in its VPS with `stdio` as the helper's stdin,
/// stdout and stderr. Returns once the helper has joined the VPS (and
/// allocated the pty there, if asked), or with what it reported instead.
pub fn attach(exe: &Path, plan: &AttachPlan, stdio: [Stdio; 3]) -> Result<Attached, HelperError> {
    let (ours, theirs) = socket_pair(ATTACH, SockType::SeqPacket)?;
    let mut cmd = command(exe, ATTACH);
    let [stdin, stdout, stderr] = stdio;
    cmd.arg(serde_json::to_string(plan).expect("plan serializes"))
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    let child = spawn(cmd, exe, ATTACH, theirs)?;
    let attached = Attached {
        child,
        master: None,
    };
    match read_report(ours.as_fd(), REPORT_TIMEOUT) {
        Ok((Report::Ready, master)) if master.is_some() == plan.tty => {
            Ok(Attached { master, ..attached })
        }
        Ok((Report::Ready, _)) => {
            attached.stop();
            Err(HelperError::Silent)
        }
        Ok((Report::Failed { kind, message }, _)) => {
            attached.stop();
            Err(HelperError::Failed { kind, message })
        }
        Err(e) => {
            attached.stop();
            Err(e)
        }
    }
}

/// What a command run by [`run_in_vps`] left behind.
pub struct Ran {
    pub code: i32,
    /// The start of what it wrote to stderr.
    pub stderr: String,
}

/// Run `plan`'s command in its VPS with `input` on its stdin, its stdout
/// discarded; kill it if it has not finished within `timeout`.
pub fn run_in_vps(
    exe: &Path,
    plan: &AttachPlan,
    input: &[u8],
    timeout: Duration,
) -> Result<Ran, HelperError> {
    let mut attached = attach(exe, plan, [Stdio::piped(), Stdio::null(), Stdio::piped()])?;
    let stdin = attached.child.stdin.take();
    let stderr = attached.child.stderr.take();
    let pidfd = crate::sys::pidfd_open(attached.child.id()).map_err(io_err(ATTACH))?;
    // The input is small (a file of the VPS's /etc): it fits the pipe.
    if let Some(mut stdin) = stdin {
        let _ = stdin.write_all(input);
    }
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    if !crate::sys::pidfd_wait_exit(pidfd.as_fd(), ms) {
        attached.stop();
        return Err(HelperError::TooSlow(timeout));
    }
    // What the command wrote is in the pipe by now; a process it left
    // behind may hold the pipe open, so read without waiting for its end.
    let mut text = Vec::new();
    if let Some(stderr) = stderr {
        let fd = OwnedFd::from(stderr);
        let _ = nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        let _ = std::fs::File::from(fd)
            .take(MAX_REPORT as u64)
            .read_to_end(&mut text);
    }
    Ok(Ran {
        code: attached.wait().map_err(io_err(ATTACH))?,
        stderr: String::from_utf8_lossy(&text).trim().to_owned(),
    })
}

fn send_report(control: BorrowedFd<'_>, report: &Report, fd: Option<BorrowedFd<'_>>) {
    let mut bytes = serde_json::to_vec(report).expect("report serializes");
    if bytes.len() > MAX_REPORT
        && let Report::Failed { kind, message } = report
    {
        let cut = message.floor_char_boundary(MAX_REPORT / 2);
        bytes = serde_json::to_vec(&Report::Failed {
            kind: *kind,
            message: message[..cut].to_owned(),
        })
        .expect("report serializes");
    }
    let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    // Nobody to tell if the daemon is gone: the helper's exit says it all.
    let _ = sendmsg::<()>(
        control.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    );
}

fn read_report(
    control: BorrowedFd<'_>,
    timeout: Duration,
) -> Result<(Report, Option<OwnedFd>), HelperError> {
    let mut pfd = [PollFd::new(control, PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    if poll(&mut pfd, ms).map_err(|e| io_err(ATTACH)(e.into()))? == 0 {
        return Err(HelperError::Timeout(timeout));
    }
    let mut buf = vec![0u8; MAX_REPORT];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        control.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| io_err(ATTACH)(e.into()))?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(|e| io_err(ATTACH)(e.into()))? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these fds for us.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let n = msg.bytes;
    if n == 0 {
        return Err(HelperError::Silent);
    }
    let report = serde_json::from_slice(&buf[..n]).map_err(|_| HelperError::Silent)?;
    Ok((report, fds.into_iter().next()))
}

/// If this process was started as one of the helpers, run it and return
/// its exit code; `None` for every other command line.
pub fn main_if_helper() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let which = args.next()?;
    if which == OsStr::new(LAUNCH) {
        Some(launch_main())
    } else if which == OsStr::new(ATTACH) {
        let plan = args.next().unwrap_or_default();
        Some(attach_main(&plan.to_string_lossy()))
    } else {
        None
    }
}

fn launch_main() -> ExitCode {
    let mut plan = String::new();
    let result = io::stdin()
        .read_to_string(&mut plan)
        .map_err(|e| format!("cannot read the launch plan: {e}"))
        .and_then(|_| {
            serde_json::from_str(&plan).map_err(|e| format!("malformed launch plan: {e}"))
        })
        .and_then(|plan| super::launch::launch(&plan).map_err(|e| e.to_string()));
    match result {
        Ok(pid) => {
            println!("{pid}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vzhost: {e}");
            ExitCode::FAILURE
        }
    }
}

fn attach_main(plan: &str) -> ExitCode {
    // SAFETY: fd 3 is the control socket by this protocol; nothing else in
    // this fresh process owns it.
    let control = unsafe { OwnedFd::from_raw_fd(SOCKET_FD) };
    let is_socket =
        nix::sys::stat::fstat(&control).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK);
    if !is_socket {
        // Started by hand, not by a daemon: fd 3 is someone else's.
        std::mem::forget(control);
        eprintln!("vzhost: {ATTACH} is started by the daemon only");
        return ExitCode::from(2);
    }
    let joined = serde_json::from_str::<AttachPlan>(plan)
        .map_err(|e| (ErrorKind::Internal, format!("malformed attach plan: {e}")))
        .and_then(|plan| super::attach::join(&plan).map_err(|e| (e.kind(), e.to_string())));
    let mut joined = match joined {
        Ok(j) => j,
        Err((kind, message)) => {
            send_report(control.as_fd(), &Report::Failed { kind, message }, None);
            return ExitCode::FAILURE;
        }
    };
    // Only the caller keeps the master: the helper's copy goes once sent.
    let master = joined.master.take();
    send_report(
        control.as_fd(),
        &Report::Ready,
        master.as_ref().map(AsFd::as_fd),
    );
    drop((master, control));
    match joined.run() {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("vzhost: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn a_failure_report_arrives_with_its_kind() {
        let (a, b) = pair();
        let report = Report::Failed {
            kind: ErrorKind::Conflict,
            message: "the VPS is not running".into(),
        };
        send_report(b.as_fd(), &report, None);
        let (got, fd) = read_report(a.as_fd(), Duration::from_secs(1)).unwrap();
        assert_eq!(got, report);
        assert!(fd.is_none());
    }

    #[test]
    fn a_ready_report_carries_the_pty_master() {
        let (a, b) = pair();
        let (r, w) = nix::unistd::pipe().unwrap();
        send_report(b.as_fd(), &Report::Ready, Some(w.as_fd()));
        drop(w);
        let (got, fd) = read_report(a.as_fd(), Duration::from_secs(1)).unwrap();
        assert_eq!(got, Report::Ready);
        nix::unistd::write(fd.expect("an fd came along"), b"x").unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut buf).unwrap(), 1);
    }

    #[test]
    fn a_long_failure_is_cut_to_fit_one_packet() {
        let (a, b) = pair();
        let message = "é".repeat(MAX_REPORT);
        send_report(
            b.as_fd(),
            &Report::Failed {
                kind: ErrorKind::Kernel,
                message,
            },
            None,
        );
        let (got, _) = read_report(a.as_fd(), Duration::from_secs(1)).unwrap();
        let Report::Failed { kind, message } = got else {
            panic!("{got:?}")
        };
        assert_eq!(kind, ErrorKind::Kernel);
        assert!(!message.is_empty() && message.len() <= MAX_REPORT / 2);
    }

    #[test]
    fn a_silent_or_slow_helper_is_told_apart() {
        let (a, b) = pair();
        let err = read_report(a.as_fd(), Duration::from_millis(20)).unwrap_err();
        assert!(matches!(err, HelperError::Timeout(_)), "{err}");
        drop(b);
        let err = read_report(a.as_fd(), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, HelperError::Silent), "{err}");
        assert_eq!(err.kind(), ErrorKind::Internal);
    }

    #[test]
    fn exit_statuses_read_as_a_shell_reports_them() {
        assert_eq!(status_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(status_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
