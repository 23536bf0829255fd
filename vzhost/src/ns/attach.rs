//! Run a command inside a running VPS: join its cgroups and namespaces as
//! host root, become root of its user namespace, allocate a pty there if
//! asked, fork (so the command is inside the PID namespace, in a session of
//! its own) and exec. Runs in the `vzhost __attach` helper (see
//! [`super::helper`]); the daemon hands it pipes for stdio, or takes back
//! the pty master it allocated.
use std::{
    ffi::CString,
    fs,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use nix::{
    fcntl::{FcntlArg, OFlag, fcntl},
    sched::{CloneFlags, setns},
    sys::wait::{WaitStatus, waitpid},
    unistd::{ForkResult, fork},
};
use serde::{Deserialize, Serialize};

use crate::{cgroup::delegate, model::ErrorKind, sys};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachPlan {
    pub init_pid: u32,
    pub init_start: u64,
    /// The VPS's v2 cgroup directory and its path from the v2 root: the
    /// helper joins the cgroup of the VPS's PID 1 beneath it, a leaf even
    /// once the VPS's own service manager has enabled controllers there.
    pub cgroup: PathBuf,
    pub cgroup_path: String,
    /// The `cgroup.procs` of its v1 cgroups (hybrid hosts).
    pub v1_procs: Vec<PathBuf>,
    pub argv: Vec<String>,
    /// Run the command on a pty allocated inside the VPS, its controlling
    /// terminal; without, on the stdio the helper was given.
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
    #[error(
        "the VPS's {path} is not a usable pty multiplexer ({source}); a VPS that replaced it \
         gets no terminal: restart it to get its /dev/pts back"
    )]
    Pty {
        path: String,
        source: std::io::Error,
    },
}

impl AttachError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NotRunning(_) => ErrorKind::Conflict,
            Self::Sys { .. } | Self::Pty { .. } => ErrorKind::Kernel,
        }
    }
}

fn sys_err(step: impl Into<String>) -> impl FnOnce(nix::Error) -> AttachError {
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

/// The VPS's pty multiplexer, as its own root sees it.
const PTMX: &str = "/dev/pts/ptmx";

/// A pty pair: the master goes back to the caller, the peer is the
/// command's terminal.
pub struct Pty {
    pub master: OwnedFd,
    pub peer: OwnedFd,
}

/// A new pty from the multiplexer at `ptmx`: opened without following a
/// symlink and without blocking (whatever a VPS put there), checked to be a
/// pty master, unlocked, and its peer taken through the master.
pub fn open_pty(ptmx: &Path) -> Result<Pty, AttachError> {
    let refuse = |source| AttachError::Pty {
        path: ptmx.display().to_string(),
        source,
    };
    let master: OwnedFd = nix::fcntl::open(
        ptmx,
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| refuse(e.into()))?;
    sys::pty_number(master.as_fd()).map_err(refuse)?;
    // Blocking again for the caller that relays it.
    fcntl(&master, FcntlArg::F_SETFL(OFlag::empty())).map_err(|e| refuse(e.into()))?;
    sys::unlock_pty(master.as_fd()).map_err(refuse)?;
    let peer = sys::pty_peer(master.as_fd()).map_err(refuse)?;
    Ok(Pty { master, peer })
}

/// A helper that has joined a running VPS as its root, ready to run the
/// command.
pub struct Joined {
    argv: Vec<CString>,
    /// The pty's master, when the plan asks for a terminal: for the caller,
    /// to be taken before [`Joined::run`].
    pub master: Option<OwnedFd>,
    /// The command's terminal.
    peer: Option<OwnedFd>,
}

/// Join the VPS of `plan`: its cgroups, its namespaces, its root user; and
/// allocate its pty, so the kernel checks the VPS's own permissions on the
/// VPS's own /dev.
pub fn join(plan: &AttachPlan) -> Result<Joined, AttachError> {
    if !sys::is_same_process(plan.init_pid, plan.init_start) {
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

    super::join_cgroups(&plan.v1_procs).map_err(|source| AttachError::Sys {
        step: "join the VPS cgroups".into(),
        source,
    })?;
    join_leaf(plan)?;
    for (name, flag, fd) in &others {
        setns(fd, *flag).map_err(sys_err(format!("enter the VPS's {name} namespace")))?;
    }
    setns(&user, CloneFlags::CLONE_NEWUSER).map_err(sys_err("enter the VPS's user namespace"))?;
    super::become_vps_root().map_err(sys_err("become root of the VPS"))?;
    let (master, peer) = if plan.tty {
        let pty = open_pty(Path::new(PTMX))?;
        (Some(pty.master), Some(pty.peer))
    } else {
        (None, None)
    };
    let argv = plan
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| AttachError::Sys {
            step: "pass the command line".into(),
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        })?;
    Ok(Joined { argv, master, peer })
}

/// Join the v2 cgroup of the VPS's PID 1 (a leaf: v2 keeps no process in
/// a cgroup whose controllers are enabled for children).
fn join_leaf(plan: &AttachPlan) -> Result<(), AttachError> {
    let step = || "join the cgroup of the VPS's init".to_owned();
    let membership =
        fs::read_to_string(format!("/proc/{}/cgroup", plan.init_pid)).map_err(|source| {
            AttachError::Sys {
                step: step(),
                source,
            }
        })?;
    let rel = delegate::below(&plan.cgroup_path, &membership).ok_or_else(|| AttachError::Sys {
        step: step(),
        source: std::io::Error::other(format!(
            "its init is not in the VPS's cgroup {}",
            plan.cgroup_path
        )),
    })?;
    delegate::join_beneath(&plan.cgroup, &rel).map_err(|source| AttachError::Sys {
        step: format!("join cgroup {}/{rel}", plan.cgroup_path),
        source,
    })
}

impl Joined {
    /// Run the command in a session of its own (on the pty, its
    /// controlling terminal, if there is one); returns its exit status
    /// (128 + signal when killed).
    pub fn run(self) -> Result<i32, AttachError> {
        drop(self.master);
        let env: Vec<CString> = ENV
            .iter()
            .map(|e| CString::new(*e).expect("static"))
            .collect();
        // SAFETY: the helper is single-threaded.
        match unsafe { fork() }.map_err(sys_err("fork"))? {
            ForkResult::Child => {
                let e = exec_child(&self.argv, &env, self.peer.as_ref());
                eprintln!("vzhost: cannot run {:?}: {e}", self.argv[0]);
                // SAFETY: _exit is always safe in a forked child.
                unsafe { libc::_exit(if e == nix::Error::ENOENT { 127 } else { 126 }) }
            }
            ForkResult::Parent { child } => {
                // Only the command keeps the terminal open: when it is
                // gone, the caller's master reads EOF.
                drop(self.peer);
                loop {
                    match waitpid(child, None).map_err(sys_err("wait"))? {
                        WaitStatus::Exited(_, code) => return Ok(code),
                        WaitStatus::Signaled(_, sig, _) => return Ok(128 + sig as i32),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// In the forked child: a new session, the terminal as stdio and
/// controlling terminal, nothing else of the helper's open, then exec.
/// Returns only on failure.
fn exec_child(argv: &[CString], env: &[CString], tty: Option<&OwnedFd>) -> nix::Error {
    let run = || -> nix::Result<std::convert::Infallible> {
        nix::unistd::setsid()?;
        if let Some(tty) = tty {
            nix::unistd::dup2_stdin(tty)?;
            nix::unistd::dup2_stdout(tty)?;
            nix::unistd::dup2_stderr(tty)?;
            sys::set_controlling_tty(std::io::stdin().as_fd()).map_err(io_to_nix)?;
        }
        let _ = std::env::set_current_dir("/");
        sys::cloexec_from(3).map_err(io_to_nix)?;
        sys::refuse_unhooked_mount_calls().map_err(io_to_nix)?;
        // SAFETY: the forked child is single-threaded; execvpe searches
        // the PATH of this process's environment.
        unsafe { std::env::set_var("PATH", &ENV[0][5..]) };
        nix::unistd::execvpe(&argv[0], argv, env)
    };
    match run() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn io_to_nix(e: std::io::Error) -> nix::Error {
    nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::sys::{
        Call,
        fake::{Fake, fail, new_fd, ok},
    };

    #[test]
    fn the_pty_is_checked_before_it_is_unlocked_and_its_peer_taken() {
        let fake = Fake::install(|call| match call {
            Call::PtyPeer => new_fd(),
            _ => ok(),
        });
        let pty = open_pty(Path::new("/dev/ptmx")).expect("a pty");
        assert_eq!(
            fake.calls(),
            [Call::PtyNumber, Call::PtyUnlock, Call::PtyPeer]
        );
        drop(pty);
    }

    #[test]
    fn something_else_than_a_pty_master_is_never_unlocked() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("ptmx");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let fake = Fake::install(|call| match call {
            Call::PtyNumber => fail(libc::ENOTTY),
            _ => ok(),
        });
        // A FIFO opens without blocking and fails the pty check.
        let err = open_pty(&fifo).err().expect("refused");
        assert!(matches!(err, AttachError::Pty { .. }), "{err}");
        assert_eq!(fake.calls(), [Call::PtyNumber]);
    }

    #[test]
    fn a_symlinked_multiplexer_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("host-file");
        fs::write(&target, "host").unwrap();
        let link = dir.path().join("ptmx");
        symlink(&target, &link).unwrap();
        let fake = Fake::install(|_| ok());
        let err = open_pty(&link).err().expect("refused");
        let AttachError::Pty { source, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(source.raw_os_error(), Some(libc::ELOOP));
        assert!(fake.calls().is_empty(), "no ioctl reached the kernel");
        assert_eq!(fs::read_to_string(&target).unwrap(), "host");
    }

    #[test]
    fn a_real_multiplexer_gives_a_working_pair() {
        let pty = open_pty(Path::new("/dev/ptmx")).expect("a pty");
        nix::unistd::write(&pty.master, b"ping\n").unwrap();
        let mut buf = [0u8; 16];
        let n = nix::unistd::read(&pty.peer, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping\n");
    }

    #[test]
    fn a_vanished_vps_is_a_conflict_not_a_kernel_failure() {
        let plan = AttachPlan {
            init_pid: std::process::id(),
            init_start: 0,
            cgroup: PathBuf::new(),
            cgroup_path: String::new(),
            v1_procs: vec![],
            argv: vec!["true".into()],
            tty: false,
        };
        let err = join(&plan).err().expect("not the process the plan names");
        assert!(matches!(err, AttachError::NotRunning(_)));
        assert_eq!(err.kind(), ErrorKind::Conflict);
    }
}
