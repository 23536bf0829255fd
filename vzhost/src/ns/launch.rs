//! Start a VPS: user namespace with the VPS's id map, overlay root over an
//! idmapped template, the VPS's cgroups, then fresh mount, UTS, IPC,
//! network, PID and cgroup namespaces owned by the VPS's user namespace,
//! and its PID 1. Runs in the `vzhost __launch` helper, which exits once
//! PID 1 has exec'd its init, so PID 1 is reparented away from vzhost.
use std::{
    fs,
    io::{Read as _, Write as _},
    os::fd::{AsFd as _, OwnedFd},
    path::PathBuf,
};

use nix::{
    sched::{CloneFlags, setns, unshare},
    sys::wait::waitpid,
    unistd::{ForkResult, fork, pipe2},
};
use serde::{Deserialize, Serialize};

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

/// Start the VPS; returns the host pid of its PID 1.
pub fn launch(plan: &LaunchPlan) -> Result<u32, LaunchError> {
    let dir = VpsDir(plan.vps_dir.clone());
    let console = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.console_log())
        .map_err(io("open the console log"))?;
    let userns = make_userns(&plan.idmap)?;

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

    super::join_cgroups(&plan.cgroup_procs).map_err(io("join the VPS cgroups"))?;
    setns(&userns, CloneFlags::CLONE_NEWUSER).map_err(sys("enter the VPS user namespace"))?;
    super::become_vps_root().map_err(sys("become root of the VPS"))?;
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .map_err(sys("unshare the VPS namespaces"))?;

    // PID 1 reports a setup failure through this pipe; a successful exec
    // closes it (O_CLOEXEC) and the parent reads EOF.
    let (err_r, err_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    // SAFETY: the launcher is single-threaded.
    match unsafe { fork() }.map_err(sys("fork PID 1"))? {
        ForkResult::Child => {
            drop(err_r);
            let e = pid1(plan, &dir, &console);
            let mut w = fs::File::from(err_w);
            let _ = write!(w, "{e}");
            // SAFETY: _exit is always safe in a forked child.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            let mut msg = String::new();
            let _ = fs::File::from(err_r).read_to_string(&mut msg);
            if !msg.is_empty() {
                let _ = waitpid(child, None);
                return Err(LaunchError::Init(msg));
            }
            Ok(child.as_raw() as u32)
        }
    }
}

/// The VPS's PID 1 before it execs init. Returns only on failure.
fn pid1(plan: &LaunchPlan, dir: &VpsDir, console: &fs::File) -> LaunchError {
    let run = || -> Result<std::convert::Infallible, LaunchError> {
        nix::unistd::setsid().map_err(sys("setsid"))?;
        nix::unistd::sethostname(&plan.hostname).map_err(sys("sethostname"))?;
        mounts::finish_root(&dir.rootfs())?;
        crate::sys::loopback_up().map_err(io("bring up loopback"))?;
        let null = fs::File::open("/dev/null").map_err(io("open /dev/null"))?;
        nix::unistd::dup2_stdin(null.as_fd()).map_err(sys("dup2 stdin"))?;
        nix::unistd::dup2_stdout(console.as_fd()).map_err(sys("dup2 stdout"))?;
        nix::unistd::dup2_stderr(console.as_fd()).map_err(sys("dup2 stderr"))?;
        crate::sys::cloexec_from(3).map_err(io("mark fds close-on-exec"))?;
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
