//! `vzhost start`: cgroups with their limits, the KSAL's guards, PID 1
//! built and held, the network, the whole policy, and only then the VPS's
//! own init. Nothing of the VPS runs before its policy is in force (like
//! runc's exec fifo), and a start that fails at any step kills what it
//! launched and undoes what it made, leaving the VPS stopped and intact.
use std::{
    io::Write as _,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use super::{
    error::{LifecycleError, Result},
    host::{Host, lock, now},
};
use crate::{
    cgroup::manager::VpsCgroup,
    enforce::{Stage, VpsRoot},
    model::{InitKind, Name, Runtime, Spec},
    ns::{Phases, helper, launch::LaunchPlan},
    sys::{pidfd_open, pidfd_send_signal, pidfd_wait_exit, process_start_time},
};

const INIT: &[&str] = &["/sbin/init"];

/// A VPS's PID 1, building its root and then waiting for the go to run
/// init.
pub(super) struct HeldInit {
    pub pid: u32,
    /// Its launcher, until PID 1 has built its root.
    building: Option<helper::Launching>,
    /// A byte written to it lets PID 1 go on (closing it unwritten makes
    /// it exit); it then closes as init runs, or says why init could not.
    go: OwnedFd,
}

/// How long a released PID 1 may take to exec the VPS's init.
const EXEC_TIMEOUT_MS: u16 = 10_000;

/// A start, step by step. The host does them for real; a unit test
/// records them, to prove the order and the undoing.
pub(super) trait StartSteps {
    /// Create the cgroups with their limits; the v2 cgroup's id.
    fn cgroup(&mut self) -> Result<u64>;
    /// Attach the guards and register the VPS as far as it is built.
    fn admit(&mut self, cgroup_id: u64) -> Result<()>;
    /// Launch PID 1: it builds its root and runs nothing of the VPS.
    fn launch(&mut self) -> Result<HeldInit>;
    /// Its network, while PID 1 builds its root.
    fn network(&mut self, pid: u32) -> Result<()>;
    /// Wait until PID 1 has built its root.
    fn built(&mut self, init: &mut HeldInit) -> Result<()>;
    /// The whole policy, files resolved in PID 1's finished root.
    fn enforce(&mut self, cgroup_id: u64, pid: u32) -> Result<()>;
    /// Let PID 1 exec the VPS's init and record that it runs.
    fn release(&mut self, init: HeldInit) -> Result<Runtime>;
    /// Kill a PID 1 that must not live on.
    fn kill(&mut self, pid: u32);
    /// Undo what the steps made: veth, KSAL entries, cgroups, runtime.
    fn cleanup(&mut self);
}

/// Run the steps; on any failure kill PID 1 (if launched) and clean up.
pub(super) fn run_steps(steps: &mut impl StartSteps) -> Result<Runtime> {
    let mut launched = None;
    let mut go = || {
        let cgroup_id = steps.cgroup()?;
        steps.admit(cgroup_id)?;
        let mut init = steps.launch()?;
        launched = Some(init.pid);
        steps.network(init.pid)?;
        steps.built(&mut init)?;
        steps.enforce(cgroup_id, init.pid)?;
        steps.release(init)
    };
    let result = go();
    if result.is_err() {
        if let Some(pid) = launched {
            steps.kill(pid);
        }
        steps.cleanup();
    }
    result
}

impl Host {
    pub fn start(&self, name: &str) -> Result<Runtime> {
        let name = Name::new(name)?;
        let vps_lock = self.vps_lock(&name);
        let _serial = lock(&vps_lock);
        self.start_locked(&name)
    }

    /// Start a VPS whose lock the caller holds, and watch its init.
    pub(super) fn start_locked(&self, name: &Name) -> Result<Runtime> {
        crate::ns::prime_cgroup_migration();
        let name = name.clone();
        let spec = self.store.load(&name)?;
        if self.live_runtime(&name).is_some() {
            return Err(LifecycleError::Running(name.to_string()));
        }
        let span = tracing::info_span!("start", vps = %name);
        let _enter = span.enter();
        let template = self.templates.resolve(&spec.template)?;
        let started = std::time::Instant::now();
        match super::init::ensure_machine_id(&self.store.dir(&name).upper(), spec.idmap) {
            Ok(true) => tracing::info!("gave it a machine-id of its own"),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot give it a machine-id of its own: {e}"),
        }
        let mut steps = RealStart {
            host: self,
            cgroup: self.cgroup(&name),
            spec: &spec,
            template,
            init: InitKind::default(),
            phases: Phases::default(),
        };
        let runtime = run_steps(&mut steps)?;
        tracing::info!(init_pid = runtime.init_pid, took = ?started.elapsed(), "started");
        self.watch(&name, &runtime);
        steps.phases.mark("watch");
        // The bench collects these to show where a start spends its time.
        tracing::debug!("start phases: {}", steps.phases);
        Ok(runtime)
    }

    /// After a VPS's init is gone: remove its veth, forget it in the KSAL,
    /// remove its cgroups (killing leftovers), clear its runtime.
    pub(super) fn cleanup_stopped(&self, spec: &Spec, cgroup: &VpsCgroup) {
        if let Err(e) = crate::net::detach_vps(&self.net, spec.id) {
            tracing::warn!(vps = %spec.name, %e, "cannot remove its veth");
        }
        if let Ok(id) = cgroup.id() {
            self.enforcement().forget(id, spec.id);
        }
        self.close_cgroup(&spec.name);
        if let Err(e) = cgroup.remove() {
            tracing::warn!(vps = %spec.name, %e, "cannot remove cgroups");
        }
        let _ = self.store.set_runtime(&spec.name, None);
    }
}

/// Give a held PID 1 the go and wait until it has exec'd the VPS's init:
/// empty when it did, else PID 1's reason why not.
fn release_init(go: OwnedFd) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut go = std::fs::File::from(go);
    go.write_all(b"1")?;
    let ready = nix::poll::poll(
        &mut [nix::poll::PollFd::new(
            go.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )],
        EXEC_TIMEOUT_MS,
    )?;
    if ready == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "its init did not start in time",
        ));
    }
    let mut why = String::new();
    go.take(4096).read_to_string(&mut why)?;
    Ok(why)
}

/// Kill `pid` through a pidfd (never a reused pid) and wait for it.
pub(super) fn kill_init(pid: u32) {
    if let Ok(fd) = pidfd_open(pid) {
        let _ = pidfd_send_signal(fd.as_fd(), libc::SIGKILL);
        pidfd_wait_exit(fd.as_fd(), 5_000);
        // The daemon is its subreaper: no zombie stays behind.
        super::watch::reap(&fd);
    }
}

struct RealStart<'a> {
    host: &'a Host,
    spec: &'a Spec,
    cgroup: VpsCgroup,
    template: PathBuf,
    /// What the VPS's /sbin/init is, seen in its built root.
    init: InitKind,
    phases: Phases,
}

impl RealStart<'_> {
    fn name(&self) -> String {
        self.spec.name.to_string()
    }

    fn cgroup_err(&self) -> impl FnOnce(crate::cgroup::manager::ManagerError) -> LifecycleError {
        let name = self.name();
        move |source| LifecycleError::Cgroup { name, source }
    }
}

impl StartSteps for RealStart<'_> {
    fn cgroup(&mut self) -> Result<u64> {
        self.cgroup.create().map_err(self.cgroup_err())?;
        self.cgroup
            .apply(&self.spec.limits)
            .map_err(self.cgroup_err())?;
        let root = self.spec.idmap.base;
        self.cgroup
            .delegate(root, root)
            .map_err(self.cgroup_err())?;
        let id = self.cgroup.id().map_err(self.cgroup_err());
        self.phases.mark("cgroup");
        id
    }

    fn admit(&mut self, cgroup_id: u64) -> Result<()> {
        let ip = self.spec.ip.map(|ip| ip.addr);
        self.host
            .enforcement()
            .admit(self.spec, (self.cgroup.v2_path(), cgroup_id), ip)?;
        self.phases.mark("admit");
        Ok(())
    }

    fn launch(&mut self) -> Result<HeldInit> {
        let plan = LaunchPlan {
            vps_dir: self.host.store.dir(&self.spec.name).0,
            template: self.template.clone(),
            idmap: self.spec.idmap,
            hostname: self.spec.hostname.clone(),
            cgroup_procs: self.cgroup.procs_files(),
            host_leaf_procs: self.cgroup.host_leaf_procs(),
            init: INIT.iter().map(|s| (*s).to_owned()).collect(),
        };
        let init = run_launcher(&self.host.exe, &self.spec.name, &plan)?;
        self.phases.mark("launch");
        Ok(init)
    }

    fn built(&mut self, init: &mut HeldInit) -> Result<()> {
        if let Some(building) = init.building.take() {
            building.built().map_err(|e| LifecycleError::Launch {
                name: self.name(),
                why: e.to_string(),
            })?;
        }
        self.phases.mark("root_built");
        Ok(())
    }

    fn network(&mut self, pid: u32) -> Result<()> {
        let Some(ip) = self.spec.ip else {
            return Ok(());
        };
        let name = self.name();
        let net_err = |source| LifecycleError::Net { name, source };
        crate::net::ensure_bridge(&self.host.net)
            .and_then(|()| {
                self.phases.mark("bridge");
                crate::net::attach_vps(&self.host.net, self.spec.id, ip, self.spec.ip6, pid)
            })
            .map_err(net_err)?;
        self.phases.mark("veth");
        // Before its init runs: every frame it sends is checked from here.
        let cgroup_id = self.cgroup.id().map_err(self.cgroup_err())?;
        self.host
            .enforcement()
            .attach_veth(self.spec, cgroup_id, &self.host.net)?;
        self.phases.mark("veth_guard");
        Ok(())
    }

    fn enforce(&mut self, cgroup_id: u64, pid: u32) -> Result<()> {
        // Taken while PID 1 is held: the root the VPS was built with, out
        // of reach of anything it later mounts or chroots into.
        let start = crate::sys::process_start_time(pid).unwrap_or_default();
        let root = VpsRoot::capture(pid, start).map_err(|source| LifecycleError::Io {
            name: self.name(),
            what: "open its root for the file rules".into(),
            source,
        })?;
        self.init = super::init::kind_in(&root);
        self.host
            .enforcement()
            .apply(self.spec, cgroup_id, Stage::Built, Some(root))?;
        self.phases.mark("enforce");
        Ok(())
    }

    fn release(&mut self, init: HeldInit) -> Result<Runtime> {
        let why = release_init(init.go).map_err(|source| LifecycleError::Io {
            name: self.name(),
            what: "release its init".into(),
            source,
        })?;
        if !why.is_empty() {
            return Err(LifecycleError::Launch {
                name: self.name(),
                why,
            });
        }
        self.phases.mark("exec_init");
        let runtime = Runtime {
            init_pid: init.pid,
            init_start: process_start_time(init.pid)
                .ok_or_else(|| LifecycleError::InitExited(self.name()))?,
            started_at: now(),
            init: self.init,
        };
        self.host
            .store
            .set_runtime(&self.spec.name, Some(&runtime))?;
        self.phases.mark("record");
        Ok(runtime)
    }

    fn kill(&mut self, pid: u32) {
        kill_init(pid);
    }

    fn cleanup(&mut self) {
        self.host.cleanup_stopped(self.spec, &self.cgroup);
    }
}

/// Run the launcher: it builds the VPS and leaves PID 1 held on one end of
/// a socket pair whose other end comes back here.
fn run_launcher(exe: &Path, name: &Name, plan: &LaunchPlan) -> Result<HeldInit> {
    let (building, go) = helper::launch(exe, plan).map_err(|e| LifecycleError::Launch {
        name: name.to_string(),
        why: e.to_string(),
    })?;
    Ok(HeldInit {
        pid: building.pid,
        building: Some(building),
        go,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each step; fails the one named.
    #[derive(Default)]
    struct Recorder {
        steps: Vec<String>,
        fail: &'static str,
    }

    impl Recorder {
        fn step(&mut self, name: &str) -> Result<()> {
            self.steps.push(name.to_owned());
            if self.fail == name {
                return Err(LifecycleError::Launch {
                    name: "t".into(),
                    why: format!("{name} failed"),
                });
            }
            Ok(())
        }
    }

    impl StartSteps for Recorder {
        fn cgroup(&mut self) -> Result<u64> {
            self.step("cgroup").map(|()| 7)
        }
        fn admit(&mut self, cgroup_id: u64) -> Result<()> {
            assert_eq!(cgroup_id, 7);
            self.step("admit")
        }
        fn launch(&mut self) -> Result<HeldInit> {
            self.step("launch")?;
            let (_, go) = nix::unistd::pipe().expect("pipe");
            Ok(HeldInit {
                pid: 42,
                building: None,
                go,
            })
        }
        fn network(&mut self, pid: u32) -> Result<()> {
            assert_eq!(pid, 42);
            self.step("network")
        }
        fn built(&mut self, init: &mut HeldInit) -> Result<()> {
            assert_eq!(init.pid, 42);
            self.step("built")
        }
        fn enforce(&mut self, _: u64, _: u32) -> Result<()> {
            self.step("enforce")
        }
        fn release(&mut self, _: HeldInit) -> Result<Runtime> {
            self.step("release")?;
            Ok(Runtime {
                init_pid: 42,
                init_start: 1,
                started_at: 1,
                init: InitKind::Plain,
            })
        }
        fn kill(&mut self, pid: u32) {
            self.steps.push(format!("kill {pid}"));
        }
        fn cleanup(&mut self) {
            self.steps.push("cleanup".into());
        }
    }

    fn run(fail: &'static str) -> (bool, Vec<String>) {
        let mut r = Recorder {
            fail,
            ..Default::default()
        };
        let ok = run_steps(&mut r).is_ok();
        (ok, r.steps)
    }

    #[test]
    fn init_runs_only_after_the_whole_policy_is_in_force() {
        let (ok, steps) = run("");
        assert!(ok);
        assert_eq!(
            steps,
            [
                "cgroup", "admit", "launch", "network", "built", "enforce", "release"
            ]
        );
    }

    #[test]
    fn a_failed_policy_kills_the_held_init_before_it_ever_runs() {
        let (ok, steps) = run("enforce");
        assert!(!ok);
        assert_eq!(
            steps,
            [
                "cgroup", "admit", "launch", "network", "built", "enforce", "kill 42", "cleanup"
            ]
        );
    }

    #[test]
    fn a_failed_network_kills_init_then_cleans_up() {
        let (_, steps) = run("network");
        assert_eq!(steps[3..], ["network", "kill 42", "cleanup"]);
    }

    #[test]
    fn a_root_that_cannot_be_built_kills_init_before_the_policy_is_applied() {
        let (ok, steps) = run("built");
        assert!(!ok);
        assert_eq!(steps[3..], ["network", "built", "kill 42", "cleanup"]);
    }

    #[test]
    fn a_failed_launch_has_nothing_to_kill_but_still_cleans_up() {
        let (ok, steps) = run("launch");
        assert!(!ok);
        assert_eq!(steps, ["cgroup", "admit", "launch", "cleanup"]);
    }

    #[test]
    fn a_refused_admission_cleans_up_the_cgroups() {
        let (_, steps) = run("admit");
        assert_eq!(steps, ["cgroup", "admit", "cleanup"]);
    }

    #[test]
    fn an_init_that_exits_at_once_is_killed_and_cleaned_up() {
        let (ok, steps) = run("release");
        assert!(!ok);
        assert_eq!(steps[6..], ["release", "kill 42", "cleanup"]);
    }

    #[test]
    fn killing_init_goes_through_a_pidfd_and_waits() {
        use crate::sys::{Call, fake};
        let f = fake::Fake::install(|call| match call {
            Call::PidfdOpen { .. } => fake::new_fd(),
            Call::PidfdWait { .. } => Some(Ok(1)),
            _ => fake::ok(),
        });
        kill_init(4242);
        assert_eq!(
            f.calls(),
            [
                Call::PidfdOpen { pid: 4242 },
                Call::PidfdSendSignal {
                    signal: libc::SIGKILL
                },
                Call::PidfdWait { timeout_ms: 5000 },
            ]
        );
    }
}
