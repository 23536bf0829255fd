//! Start a VPS: user namespace with the VPS's id map, overlay root over an
//! idmapped template, the VPS's cgroups, then fresh mount, UTS, IPC,
//! network, PID and cgroup namespaces owned by the VPS's user namespace,
//! and its PID 1. Runs in the `vzhost __launch` helper, which exits once
//! PID 1 has built the VPS's root, so PID 1 is reparented away from vzhost.
//! PID 1 then waits on `GO_FD` until the daemon has the VPS's whole policy
//! in force, and only then execs the VPS's init; if the daemon closes the
//! pipe without a go, PID 1 exits and nothing of the VPS ever ran. PID 1's
//! stdin, stdout and stderr are the console, a pty of the VPS's own at its
//! /dev/console, whose master a keeper holds ([`super::console`]): it
//! keeps what is written in a bounded ring of files.
use std::{
    fs,
    io::{Read as _, Write as _},
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use nix::{
    sched::{CloneFlags, setns, unshare},
    sys::wait::waitpid,
    unistd::{ForkResult, fork, pipe2},
};
use serde::{Deserialize, Serialize};

use super::{
    Phases,
    attach::{AttachError, open_pty},
    console::{Console, ConsoleLink},
};
use crate::{
    model::{IdMap, VpsDir},
    rootfs::mounts,
};

/// Everything the launcher needs, handed over by the daemon as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchPlan {
    pub vps_dir: PathBuf,
    pub template: PathBuf,
    pub idmap: IdMap,
    pub hostname: String,
    pub cgroup_procs: Vec<PathBuf>,
    /// The host's leaf in the VPS's v2 cgroup, where the console keeper
    /// goes (see `cgroup::manager::HOST_LEAF`).
    pub host_leaf_procs: PathBuf,
    /// The init command line, run inside the VPS.
    pub init: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error("the VPS's console: {0}")]
    Console(#[from] AttachError),
    #[error("VPS init failed before it started: {0}")]
    Init(String),
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> LaunchError {
    move |e| LaunchError::Sys {
        step,
        source: e.into(),
    }
}

fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> LaunchError {
    move |source| LaunchError::Sys { step, source }
}

/// The descriptor on which the launcher (and PID 1 after it) holds its end
/// of the daemon's go socket: PID 1 reads the go on it, and it closes when
/// PID 1 execs the VPS's init (close-on-exec), or carries why it could not.
pub const GO_FD: i32 = super::helper::SOCKET_FD;

/// What PID 1 writes on the status pipe once its root is built.
const READY: u8 = b'R';

/// Environment PID 1 starts with.
const INIT_ENV: &[&str] = &[
    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "TERM=linux",
    "container=vzhost",
];

/// A user namespace with `idmap`, held by a short-lived child.
fn make_userns(idmap: &IdMap) -> Result<OwnedFd, LaunchError> {
    let (ready_r, ready_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let (go_r, go_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    // SAFETY: the launcher is single-threaded; the child only makes
    // syscalls and exits.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop((ready_r, go_w));
            let ok = unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = nix::unistd::write(&ready_w, if ok { b"1" } else { b"0" });
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(&go_r, &mut b);
            // SAFETY: _exit is always safe in a forked child.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop((ready_w, go_r));
            let mut b = [0u8; 1];
            let mut ready = fs::File::from(ready_r);
            let result = (|| {
                ready
                    .read_exact(&mut b)
                    .map_err(io("waiting for the user namespace"))?;
                if b[0] != b'1' {
                    return Err(LaunchError::Sys {
                        step: "unshare(CLONE_NEWUSER)",
                        source: std::io::Error::other("user namespaces are unavailable"),
                    });
                }
                let map = format!("0 {} {}\n", idmap.base, idmap.count);
                fs::write(format!("/proc/{child}/uid_map"), &map).map_err(io("write uid_map"))?;
                fs::write(format!("/proc/{child}/gid_map"), &map).map_err(io("write gid_map"))?;
                fs::File::open(format!("/proc/{child}/ns/user"))
                    .map(OwnedFd::from)
                    .map_err(io("open the user namespace"))
            })();
            drop(go_w);
            let _ = waitpid(child, None);
            result
        }
    }
}

/// A child placing the launcher in the VPS's cgroups, and in its v2
/// host leaf for the console keeper. The first cgroup migration in a while
/// waits for an RCU grace period (the kernel's cgroup_threadgroup_rwsem),
/// several ms: the child waits it out while the launcher makes the user
/// namespace and the overlay, which need no cgroup.
struct Placer {
    child: nix::unistd::Pid,
    /// Why the placing failed, if it did; closed unwritten when it worked.
    why: OwnedFd,
}

impl Placer {
    fn start(plan: &LaunchPlan) -> Result<Self, LaunchError> {
        let launcher = std::process::id().to_string();
        let mut procs = plan.cgroup_procs.clone();
        procs.push(plan.host_leaf_procs.clone());
        let (why_r, why_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
        // SAFETY: the launcher is single-threaded; the child writes to
        // cgroupfs and its pipe, and exits.
        match unsafe { fork() }.map_err(sys("fork the cgroup placer"))? {
            ForkResult::Child => {
                drop(why_r);
                let code = match super::move_to_cgroups(&launcher, &procs) {
                    Ok(()) => 0,
                    Err(e) => {
                        let _ = fs::File::from(why_w).write_all(e.to_string().as_bytes());
                        1
                    }
                };
                // SAFETY: _exit is always safe in a forked child.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => Ok(Self { child, why: why_r }),
        }
    }

    /// Wait until the launcher is placed, or say why it could not be.
    fn wait(self) -> Result<(), LaunchError> {
        let mut why = String::new();
        let _ = fs::File::from(self.why).read_to_string(&mut why);
        let status = waitpid(self.child, None).map_err(sys("wait for the cgroup placer"))?;
        if why.is_empty() && status == nix::sys::wait::WaitStatus::Exited(self.child, 0) {
            return Ok(());
        }
        Err(LaunchError::Sys {
            step: "join the VPS cgroups",
            source: std::io::Error::other(if why.is_empty() {
                format!("the cgroup placer ended with {status:?}")
            } else {
                why
            }),
        })
    }
}

/// Start the VPS: `forked` learns the host pid of its PID 1 as soon as
/// it exists (its network namespace with it), while PID 1 builds its
/// root; returns once the root is built, with how long each phase took.
pub fn launch(plan: &LaunchPlan, forked: impl FnOnce(u32)) -> Result<Phases, LaunchError> {
    let mut phases = Phases::default();
    let placer = Placer::start(plan)?;
    let dir = VpsDir(plan.vps_dir.clone());
    let console = Console::open(&dir).map_err(io("open the console (its log files and socket)"))?;
    phases.mark("console");
    let userns = make_userns(&plan.idmap)?;
    phases.mark("userns");

    unshare(CloneFlags::CLONE_NEWNS).map_err(sys("unshare(CLONE_NEWNS)"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("make the launcher's mounts private"))?;
    mounts::mount_overlay(&dir, &plan.template, userns.as_fd())?;
    phases.mark("overlay");

    placer.wait()?;
    phases.mark("join_cgroups");
    let console = console.keep().map_err(io("start the console keeper"))?;
    phases.mark("console_keeper");
    super::join_cgroups(&plan.cgroup_procs).map_err(io("join the VPS cgroups"))?;
    setns(&userns, CloneFlags::CLONE_NEWUSER).map_err(sys("enter the VPS user namespace"))?;
    super::become_vps_root().map_err(sys("become root of the VPS"))?;
    phases.mark("enter_userns");
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .map_err(sys("unshare the VPS namespaces"))?;
    phases.mark("unshare");

    // PID 1 reports READY through this pipe once its root is built, or why
    // it could not build it.
    let (status_r, status_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    // SAFETY: the launcher is single-threaded.
    match unsafe { fork() }.map_err(sys("fork PID 1"))? {
        ForkResult::Child => {
            drop(status_r);
            let e = pid1(plan, &dir, console, status_w);
            // SAFETY: _exit is always safe in a forked child.
            unsafe { libc::_exit(e) }
        }
        ForkResult::Parent { child } => {
            drop((status_w, console));
            forked(child.as_raw() as u32);
            let mut status = Vec::new();
            let _ = fs::File::from(status_r).read_to_end(&mut status);
            match status.split_first() {
                Some((&READY, _)) => {
                    phases.mark("pid1_root");
                    Ok(phases)
                }
                _ => {
                    let _ = waitpid(child, None);
                    let msg = String::from_utf8_lossy(&status).into_owned();
                    Err(LaunchError::Init(if msg.is_empty() {
                        "PID 1 exited before its root was built".into()
                    } else {
                        msg
                    }))
                }
            }
        }
    }
}

/// The VPS's PID 1 before it execs init: build the root, report READY on
/// `status`, wait for the go, exec. Returns only on failure, with the exit
/// status to use.
fn pid1(plan: &LaunchPlan, dir: &VpsDir, console: ConsoleLink, status: OwnedFd) -> i32 {
    let mut status = fs::File::from(status);
    let build = || -> Result<(), LaunchError> {
        nix::unistd::setsid().map_err(sys("setsid"))?;
        nix::unistd::sethostname(&plan.hostname).map_err(sys("sethostname"))?;
        mounts::finish_root(&dir.rootfs())?;
        crate::sys::loopback_up().map_err(io("bring up loopback"))?;
        // The console: a pty from the VPS's own devpts (never the host's),
        // bound at /dev/console; its master goes to the keeper. It is not
        // made PID 1's controlling terminal: as on a real machine, where
        // /dev/console never becomes one, a getty takes it (inside a user
        // namespace it could not take it from PID 1).
        let pty = open_pty(Path::new("/dev/pts/ptmx"))?;
        mounts::bind_console(pty.peer.as_fd())?;
        console
            .hand_over(pty.master)
            .map_err(io("hand the console to its keeper"))?;
        // The launcher's pipes must close when it exits: stdio goes to
        // the console before PID 1 waits.
        nix::unistd::dup2_stdin(&pty.peer).map_err(sys("dup2 stdin"))?;
        nix::unistd::dup2_stdout(&pty.peer).map_err(sys("dup2 stdout"))?;
        nix::unistd::dup2_stderr(&pty.peer).map_err(sys("dup2 stderr"))?;
        Ok(())
    };
    if let Err(e) = build() {
        let _ = write!(status, "{e}");
        return 127;
    }
    let _ = status.write_all(&[READY]);
    drop(status);
    let mut go = [0u8; 1];
    // SAFETY: GO_FD was handed to the launcher by the daemon and is owned
    // by nothing else in this process.
    let mut go_socket = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(GO_FD) };
    if !matches!(go_socket.read(&mut go), Ok(1)) {
        // The daemon gave up on this start: nothing of the VPS runs.
        return 1;
    }
    let e = exec_init(plan);
    let _ = write!(go_socket, "{e}");
    eprintln!("vzhost: cannot start the VPS's init: {e}");
    127
}

/// Exec the VPS's init with nothing of the host left open. Returns only
/// on failure.
fn exec_init(plan: &LaunchPlan) -> LaunchError {
    let run = || -> Result<std::convert::Infallible, LaunchError> {
        crate::sys::cloexec_from(3).map_err(io("mark fds close-on-exec"))?;
        crate::sys::refuse_unhooked_mount_calls()
            .map_err(io("install the VPS's syscall filter"))?;
        let argv: Vec<std::ffi::CString> = plan
            .init
            .iter()
            .map(|a| std::ffi::CString::new(a.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| LaunchError::Init("init argument contains NUL".into()))?;
        let env: Vec<std::ffi::CString> = INIT_ENV
            .iter()
            .map(|e| std::ffi::CString::new(*e).expect("static env"))
            .collect();
        nix::unistd::execve(&argv[0], &argv, &env).map_err(sys("exec the VPS init"))
    };
    match run() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}
