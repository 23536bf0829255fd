//! Noticing a VPS's init that ends by itself: `poweroff` inside leaves the
//! VPS stopped and cleaned up (veth, KSAL entries, cgroups), `reboot`
//! inside starts it again, as OpenVZ does.
//!
//! The daemon is a child subreaper, so the init its launcher leaves behind
//! becomes its child, and the init's wait status tells how it ended: in a
//! PID namespace, reboot(2) kills the namespace's init with SIGHUP for a
//! restart and SIGINT for a power-off or halt. One thread polls every
//! init's pidfd; an exit is handled on a thread of its own, under the
//! VPS's lock, and only if the VPS's runtime still names that init (a
//! `stop`, `restart` or `destroy` that got there first has dealt with it).
//! A VPS adopted after a daemon restart is not this daemon's child: its
//! exit is seen on the pidfd alone and taken as a poweroff.
use std::{
    os::fd::{AsFd as _, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::{
        signal::Signal,
        wait::{Id, WaitPidFlag, WaitStatus, waitid},
    },
    unistd::pipe2,
};

use super::host::{Host, lock};
use crate::{
    model::{InitExit, Name, Runtime},
    sys::pin_process,
};

/// An init being watched.
struct Watched {
    name: Name,
    runtime: Runtime,
    pidfd: OwnedFd,
}

/// Inits waiting to be picked up by the watching thread, and the pipe
/// that wakes it (without one, it looks for them every quarter second).
pub(super) struct Watcher {
    pending: Mutex<Vec<Watched>>,
    wake: Option<OwnedFd>,
    woken: Mutex<Option<OwnedFd>>,
    /// Sweeps for adopted zombies, one for many exits.
    sweeps: Coalesced,
}

/// How long a sweep for zombies waits for more inits to end: a sweep
/// reads every child's /proc entry (each running VPS's init among them),
/// so one per exit made stopping N VPSs cost N² reads.
const SWEEP_WINDOW: Duration = Duration::from_millis(500);

/// Work asked for by many threads, done once for all the requests that
/// come within a window, and never lost: a request made while the work
/// runs gets a run after it.
#[derive(Default)]
pub(super) struct Coalesced {
    wanted: AtomicBool,
    running: Mutex<()>,
}

impl Coalesced {
    /// Ask for `work`; this thread does it (after `window`) unless
    /// another is about to.
    pub(super) fn request(&self, window: Duration, work: impl Fn()) {
        self.wanted.store(true, Ordering::SeqCst);
        loop {
            let Ok(running) = self.running.try_lock() else {
                return;
            };
            while self.wanted.swap(false, Ordering::SeqCst) {
                std::thread::sleep(window);
                // Requests made while sleeping are served by this run.
                self.wanted.store(false, Ordering::SeqCst);
                work();
            }
            drop(running);
            // One made between the last check and the unlock: serve it.
            if !self.wanted.load(Ordering::SeqCst) {
                return;
            }
        }
    }
}

impl Watcher {
    pub(super) fn new() -> Self {
        let (woken, wake) =
            match pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK) {
                Ok((r, w)) => (Some(r), Some(w)),
                Err(e) => {
                    tracing::warn!("no pipe to wake the init watcher ({e}); it polls");
                    (None, None)
                }
            };
        Self {
            pending: Mutex::default(),
            wake,
            woken: Mutex::new(woken),
            sweeps: Coalesced::default(),
        }
    }
}

/// How an init ended, from its wait status (None: not this process's
/// child to wait for).
pub(super) fn exit_of(status: Option<WaitStatus>) -> InitExit {
    match status {
        Some(WaitStatus::Signaled(_, Signal::SIGHUP, _)) => InitExit::Reboot,
        Some(WaitStatus::Signaled(_, Signal::SIGINT, _)) => InitExit::Poweroff,
        Some(WaitStatus::Signaled(_, sig, _)) => InitExit::Killed(sig as i32),
        Some(WaitStatus::Exited(_, code)) => InitExit::Exited(code),
        _ => InitExit::Unknown,
    }
}

/// Reap the process behind `pidfd` if it is this process's child and has
/// ended; its wait status.
pub(super) fn reap(pidfd: &OwnedFd) -> Option<WaitStatus> {
    waitid(
        Id::PIDFd(pidfd.as_fd()),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
    )
    .ok()
}

impl Host {
    /// Watch the init of VPS `name`, which `runtime` names.
    pub(super) fn watch(&self, name: &Name, runtime: &Runtime) {
        let Some(pidfd) = pin_process(runtime.init_pid, runtime.init_start) else {
            tracing::warn!(vps = %name, "its init ended before it could be watched");
            return;
        };
        lock(&self.watcher.pending).push(Watched {
            name: name.clone(),
            runtime: runtime.clone(),
            pidfd,
        });
        if let Some(wake) = &self.watcher.wake {
            let _ = nix::unistd::write(wake, b"w");
        }
    }

    /// The watching thread's loop: never returns. Call once.
    pub fn watch_inits(self: Arc<Self>) {
        let woken = lock(&self.watcher.woken).take();
        let timeout = if woken.is_some() {
            PollTimeout::NONE
        } else {
            PollTimeout::from(250u16)
        };
        let mut watched: Vec<Watched> = Vec::new();
        loop {
            let mut drain = [0u8; 64];
            while let Some(w) = &woken
                && nix::unistd::read(w, &mut drain).is_ok_and(|n| n > 0)
            {}
            watched.append(&mut lock(&self.watcher.pending));
            let ready: Vec<bool> = {
                let mut fds: Vec<PollFd> = woken
                    .iter()
                    .map(|w| PollFd::new(w.as_fd(), PollFlags::POLLIN))
                    .collect();
                let first = fds.len();
                fds.extend(
                    watched
                        .iter()
                        .map(|w| PollFd::new(w.pidfd.as_fd(), PollFlags::POLLIN)),
                );
                if let Err(e) = poll(&mut fds, timeout) {
                    if e != nix::errno::Errno::EINTR {
                        tracing::error!("cannot watch VPS inits: {e}");
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                    continue;
                }
                fds[first..]
                    .iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect()
            };
            let mut ready = ready.into_iter();
            let (gone, kept) = watched.drain(..).partition(|_| ready.next() == Some(true));
            watched = kept;
            for w in gone {
                let host = self.clone();
                let spawned = std::thread::Builder::new()
                    .name("init-exit".into())
                    .spawn(move || host.init_exited(w));
                if let Err(e) = spawned {
                    tracing::error!("cannot handle an init's exit: {e}");
                }
            }
        }
    }

    /// Init `w` ended: unless a verb has dealt with it already, stop and
    /// clean up its VPS, and start it again if it asked for a reboot.
    fn init_exited(&self, w: Watched) {
        let exit = exit_of(reap(&w.pidfd));
        let vps_lock = self.vps_lock(&w.name);
        let serial = lock(&vps_lock);
        let ours = self.store.runtime(&w.name).as_ref() == Some(&w.runtime);
        if ours && let Ok(spec) = self.store.load(&w.name) {
            let span = tracing::info_span!("init-exit", vps = %w.name, ?exit);
            let _enter = span.enter();
            tracing::info!(
                init_pid = w.runtime.init_pid,
                "its init ended by itself; stopping"
            );
            self.cleanup_stopped(&spec, &self.cgroup(&w.name));
            lock(&self.last_exits).insert(w.name.clone(), exit);
            if exit == InitExit::Reboot {
                match self.start_locked(&w.name) {
                    Ok(r) => tracing::info!(init_pid = r.init_pid, "rebooted"),
                    Err(e) => tracing::error!("cannot start it again after its reboot: {e}"),
                }
            }
        }
        drop(serial);
        self.watcher
            .sweeps
            .request(SWEEP_WINDOW, crate::sys::reap_orphans);
    }

    /// How VPS `name`'s init last ended by itself.
    pub(super) fn last_exit(&self, name: &Name) -> Option<InitExit> {
        lock(&self.last_exits).get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use nix::unistd::Pid;

    use super::*;

    #[test]
    fn a_reboot_inside_is_a_sighup_and_a_poweroff_a_sigint() {
        let pid = Pid::from_raw(7);
        let sig = |s| Some(WaitStatus::Signaled(pid, s, false));
        assert_eq!(exit_of(sig(Signal::SIGHUP)), InitExit::Reboot);
        assert_eq!(exit_of(sig(Signal::SIGINT)), InitExit::Poweroff);
        assert_eq!(exit_of(sig(Signal::SIGKILL)), InitExit::Killed(9));
        assert_eq!(
            exit_of(Some(WaitStatus::Exited(pid, 3))),
            InitExit::Exited(3)
        );
        assert_eq!(exit_of(None), InitExit::Unknown);
    }

    #[test]
    fn many_requests_at_once_share_a_few_runs_and_none_is_lost() {
        use std::sync::atomic::AtomicUsize;
        let (c, runs) = (Coalesced::default(), AtomicUsize::new(0));
        let window = Duration::from_millis(50);
        std::thread::scope(|s| {
            for _ in 0..20 {
                s.spawn(|| {
                    c.request(window, || {
                        runs.fetch_add(1, Ordering::SeqCst);
                    })
                });
            }
        });
        let after_burst = runs.load(Ordering::SeqCst);
        assert!((1..=3).contains(&after_burst), "{after_burst} runs");
        // A later request gets a run of its own.
        c.request(window, || {
            runs.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(runs.load(Ordering::SeqCst), after_burst + 1);
    }

    #[test]
    fn a_request_made_while_the_work_runs_gets_a_run_after_it() {
        use std::sync::atomic::AtomicUsize;
        let (c, runs) = (Coalesced::default(), AtomicUsize::new(0));
        let window = Duration::from_millis(10);
        std::thread::scope(|s| {
            s.spawn(|| {
                c.request(window, || {
                    if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                        // Asked for again mid-run, by another thread.
                        std::thread::scope(|s| {
                            s.spawn(|| c.request(window, || unreachable!("runs on the first")));
                        });
                    }
                })
            });
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_child_killed_by_sighup_reads_as_a_reboot() {
        // What the kernel reports for an init whose namespace rebooted.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pidfd = crate::sys::pidfd_open(child.id()).unwrap();
        nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP).unwrap();
        assert!(crate::sys::pidfd_wait_exit(pidfd.as_fd(), 5_000));
        assert_eq!(exit_of(reap(&pidfd)), InitExit::Reboot);
        // Reaped: nothing is left to wait for.
        assert!(child.try_wait().is_err());
    }
}
