//! The helper protocol. The daemon is multi-threaded, so it never forks to
//! work on a VPS: it re-executes its own binary as a short-lived helper,
//! in a session of its own, and waits for it.
//!
//! Each gets a socket from the daemon at fd [`SOCKET_FD`]:
//!
//! - `vzhost __launch PLAN`, PLAN a [`LaunchPlan`] (JSON), gets its socket
//!   on stdin (it moves it to [`SOCKET_FD`] itself), builds the
//!   VPS's PID 1 and prints its host pid on stdout as soon as PID 1
//!   exists, then, once PID 1 has built its root, how long each of its
//!   phases took, on a line of its own; PID 1 keeps the socket
//!   and waits on it for the go (see [`super::launch`]).
//! - `vzhost __attach PLAN`, PLAN an [`AttachPlan`] (JSON), joins a running
//!   VPS and reports on its SOCK_SEQPACKET socket: `ready` (with the pty
//!   master it allocated inside the VPS, when the plan asks for a
//!   terminal) or `failed` with a kind and a message. It then runs the
//!   command and exits with its status. Its stdio are whatever the daemon
//!   gave it (pipes of its own making, never a caller's descriptors).
//!
//! (`vzhost __passwd`, whose work belongs to the VPS room, is spawned with
//! [`command`] and dispatched by `main` beside [`main_if_helper`].)
//!
//! This module holds both sides: the daemon's spawn functions (here), the
//! helpers' entry points (`entry`, which `main` calls before any argument
//! parsing) and the attach helper's report (`report`).
mod entry;
mod report;

pub use entry::main_if_helper;
use std::{
    io,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd, RawFd},
        unix::process::{CommandExt as _, ExitStatusExt as _},
    },
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use report::{Report, read_report};

use super::{attach::AttachPlan, launch::LaunchPlan};
use crate::model::ErrorKind;

pub const LAUNCH: &str = "__launch";
pub const ATTACH: &str = "__attach";

/// Where a helper finds the socket the daemon gave it.
pub const SOCKET_FD: RawFd = 3;
/// How long the daemon waits for the attach helper to join the VPS.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

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
}

impl HelperError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Failed { kind, .. } => *kind,
            Self::Launch(_) => ErrorKind::Kernel,
            Self::Spawn { .. } | Self::Io { .. } | Self::Timeout(_) | Self::Silent => {
                ErrorKind::Internal
            }
        }
    }
}

pub(super) fn io_err(which: &'static str) -> impl FnOnce(io::Error) -> HelperError {
    move |source| HelperError::Io { which, source }
}

/// A command re-executing vzhost as helper `which`, in a session of its
/// own so no VPS process shares the daemon's terminal.
pub fn command(exe: &Path, which: &'static str) -> Command {
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
fn status_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Build the VPS that `plan` describes; returns the host pid of its PID 1
/// as soon as it exists (the launcher goes on building its root: see
/// [`Launching::built`]) and the daemon's end of the go socket PID 1 waits
/// on.
pub fn launch(exe: &Path, plan: &LaunchPlan) -> Result<(Launching, OwnedFd), HelperError> {
    let (go, theirs) = socket_pair(LAUNCH, SockType::Stream)?;
    // No pre_exec here: std then spawns with posix_spawn (vfork-like)
    // instead of forking the whole daemon. The launcher makes its own
    // session and moves the socket from its stdin to SOCKET_FD.
    let mut child = Command::new(exe)
        .arg(LAUNCH)
        .arg(serde_json::to_string(plan).expect("plan serializes"))
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| HelperError::Spawn {
            which: LAUNCH,
            exe: exe.display().to_string(),
            source,
        })?;
    let mut out = io::BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    let read = io::BufRead::read_line(&mut out, &mut line);
    let mut launching = Launching {
        child: Some(child),
        out,
        pid: 0,
    };
    match (read, line.trim().parse()) {
        (Ok(_), Ok(pid)) => {
            launching.pid = pid;
            Ok((launching, go))
        }
        _ => Err(launching
            .finish()
            .err()
            .unwrap_or_else(|| HelperError::Launch("the launcher reported no init pid".into()))),
    }
}

/// A launcher whose PID 1 exists and is building its root.
pub struct Launching {
    /// Until it is waited for.
    child: Option<Child>,
    out: io::BufReader<std::process::ChildStdout>,
    /// The host pid of the VPS's PID 1.
    pub pid: u32,
}

impl Launching {
    /// Wait until PID 1 has built its root and the launcher is gone.
    pub fn built(mut self) -> Result<(), HelperError> {
        self.finish()
    }

    /// Wait for the launcher: its phases (logged), or why it failed.
    fn finish(&mut self) -> Result<(), HelperError> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        let mut rest = String::new();
        let _ = io::Read::read_to_string(&mut self.out, &mut rest);
        // PID 1 hands its stdio over to the console before it waits, so
        // these pipes close when the launcher exits.
        let out = child.wait_with_output().map_err(io_err(LAUNCH))?;
        if !out.status.success() {
            return Err(HelperError::Launch(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        tracing::debug!("launcher phases: {}", rest.trim());
        Ok(())
    }
}

/// A launcher given up on (its PID 1 is killed) is still waited for: no
/// zombie stays behind.
impl Drop for Launching {
    fn drop(&mut self) {
        let _ = self.finish();
    }
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
    super::prime_cgroup_migration();
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

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    #[test]
    fn exit_statuses_read_as_a_shell_reports_them() {
        assert_eq!(status_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(status_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
