//! Run a command inside a running VPS: join its cgroups and namespaces as
//! host root, become root of its user namespace, fork (so the command is
//! inside the PID namespace) and exec. Runs in the `vzhost __attach`
//! helper, whose stdio are the caller's.
use std::{ffi::CString, fs, os::fd::OwnedFd, path::PathBuf};

use nix::{
    sched::{CloneFlags, setns},
    sys::wait::{WaitStatus, waitpid},
    unistd::{ForkResult, fork},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachPlan {
    pub init_pid: u32,
    pub init_start: u64,
    pub cgroup_procs: Vec<PathBuf>,
    pub argv: Vec<String>,
    /// Make stdin the controlling terminal of a new session.
    pub tty: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("the VPS is not running (its init {0} is gone)")]
    NotRunning(u32),
    #[error("{step}: {source}")]
    Sys {
        step: String,
        source: std::io::Error,
    },
}

fn sys(step: impl Into<String>) -> impl FnOnce(nix::Error) -> AttachError {
    let step = step.into();
    move |e| AttachError::Sys {
        step,
        source: e.into(),
    }
}

const ENV: &[&str] = &[
    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "USER=root",
    "LOGNAME=root",
    "SHELL=/bin/sh",
];

/// Join the running VPS of `plan` as its root: its cgroups, its
/// namespaces (the root and cwd become the VPS's `/`), its user.
pub fn join(plan: &AttachPlan) -> Result<(), AttachError> {
    if !crate::sys::is_same_process(plan.init_pid, plan.init_start) {
        return Err(AttachError::NotRunning(plan.init_pid));
    }
    let open = |ns: &str| -> Result<OwnedFd, AttachError> {
        fs::File::open(format!("/proc/{}/ns/{ns}", plan.init_pid))
            .map(OwnedFd::from)
            .map_err(|source| AttachError::Sys {
                step: format!("open the VPS's {ns} namespace"),
                source,
            })
    };
    let user = open("user")?;
    let others = [
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ]
    .into_iter()
    .map(|(n, f)| open(n).map(|fd| (n, f, fd)))
    .collect::<Result<Vec<_>, _>>()?;

    super::join_cgroups(&plan.cgroup_procs).map_err(|source| AttachError::Sys {
        step: "join the VPS cgroups".into(),
        source,
    })?;
    for (name, flag, fd) in &others {
        setns(fd, *flag).map_err(sys(format!("enter the VPS's {name} namespace")))?;
    }
    setns(&user, CloneFlags::CLONE_NEWUSER).map_err(sys("enter the VPS's user namespace"))?;
    super::become_vps_root().map_err(sys("become root of the VPS"))
}

/// Run the command; returns its exit status (128 + signal when killed).
pub fn attach(plan: &AttachPlan) -> Result<i32, AttachError> {
    join(plan)?;
    let argv: Vec<CString> = plan
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()).unwrap_or_default())
        .collect();
    let env: Vec<CString> = ENV
        .iter()
        .map(|e| CString::new(*e).expect("static"))
        .collect();
    // SAFETY: the helper is single-threaded.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            let _ = std::env::set_current_dir("/");
            let _ = crate::sys::cloexec_from(3);
            // SAFETY: the forked child is single-threaded; execvpe searches
            // the PATH of this process's environment.
            unsafe { std::env::set_var("PATH", &ENV[0][5..]) };
            if plan.tty {
                let _ = nix::unistd::setsid();
                // SAFETY: TIOCSCTTY on stdin, a terminal the caller passed.
                unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
            }
            let e = nix::unistd::execvpe(&argv[0], &argv, &env).unwrap_err();
            eprintln!("vzhost: cannot run {}: {e}", plan.argv[0]);
            // SAFETY: _exit is always safe in a forked child.
            unsafe { libc::_exit(if e == nix::Error::ENOENT { 127 } else { 126 }) }
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None).map_err(sys("wait"))? {
                WaitStatus::Exited(_, code) => return Ok(code),
                WaitStatus::Signaled(_, sig, _) => return Ok(128 + sig as i32),
                _ => {}
            }
        },
    }
}
