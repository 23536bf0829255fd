//! Per-VPS cgroups under the daemon's own cgroup. Each controller vzhost
//! uses (memory, cpu, pids) is driven where the host has it: in the v2
//! tree, or in its v1 hierarchy on hybrid hosts. The v2 cgroup always
//! exists: it is the VPS's identity for the KSAL programs. Every name the
//! daemon makes carries its [`DaemonId`], so two daemons started from one
//! cgroup never see (or kill) each other's VPSs.
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Serialize;

pub use super::controllers::Version;
use super::{
    CgroupError, Layout, Membership, Procfs,
    accounting::Accounting,
    controllers::CPU_PERIOD_US,
    counters::{CgroupDir, OpenCgroup},
    depth, id_of,
};
use crate::model::{DaemonId, Limits};

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("cgroup {path}: cannot {action}: {source}")]
    Io {
        action: String,
        path: String,
        source: std::io::Error,
    },
    #[error("cgroup {path}: cannot set the {setting} limit: {source}")]
    Controller {
        setting: &'static str,
        path: String,
        // Boxed: cgroups-rs's error is large, and every caller carries it.
        source: Box<cgroups_rs::fs::error::Error>,
    },
    #[error(
        "cgroup {0} holds other processes, so vzhost cannot enable controllers for VPSs under it; \
         run the daemon in a cgroup of its own (e.g. a systemd unit with Delegate=yes)"
    )]
    Busy(String),
    #[error(
        "this host has no {controller} cgroup controller, so the {limit} limit cannot be enforced"
    )]
    NoController {
        controller: &'static str,
        limit: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, ManagerError>;

fn io_err(action: impl Into<String>, path: &Path) -> impl FnOnce(std::io::Error) -> ManagerError {
    let action = action.into();
    let path = path.display().to_string();
    move |source| ManagerError::Io {
        action,
        path,
        source,
    }
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(io_err(format!("write {value:?}"), path))
}

/// The leaf cgroup the daemon moves into when v2 controllers must be
/// enabled for its children (v2 forbids processes in such a cgroup).
pub const DAEMON_LEAF: &str = "vzhost-daemon";

/// A leaf of each VPS's v2 cgroup, made and owned by the host, for the
/// host-side helpers that count as the VPS's (its console keeper): out of
/// the VPS's own cgroup, where v2 would keep its service manager from
/// enabling controllers for its children, and out of the names such a
/// manager gives its units.
pub const HOST_LEAF: &str = "vzhost-host";

/// Controllers vzhost sets limits with.
pub const CONTROLLERS: &[&str] = &["memory", "cpu", "pids"];

/// How long `kill_all` waits for a VPS's processes to go.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Name of VPS `vps`'s v2 cgroup, beside other daemons' in a shared parent.
pub fn v2_name(daemon: &DaemonId, vps: &str) -> String {
    format!("vz-{daemon}-{vps}")
}

/// Name of a daemon's directory in each v1 hierarchy (its VPSs' v1
/// cgroups are made inside, by plain name).
pub fn v1_parent_name(daemon: &DaemonId) -> String {
    format!("vz-{daemon}")
}

/// The caller's own directory in the v1 hierarchy of `controller`, if the
/// host mounts one.
pub fn v1_dir_of(layout: &Layout, controller: &str) -> Option<PathBuf> {
    let own = Procfs::host().membership(None).ok()?;
    layout.v1_dir(controller, &own)
}

/// Where one controller lives for VPS cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    controller: &'static str,
    version: Version,
    /// Parent directory of the VPS cgroups for this controller.
    parent: PathBuf,
}

/// The daemon's cgroup subtree: where VPS cgroups are made.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    daemon: DaemonId,
    v2_parent: PathBuf,
    v2_parent_path: String,
    placements: Vec<Placement>,
}

impl Hierarchy {
    /// The subtree rooted at the calling process's own cgroups.
    pub fn for_current_process(daemon: &DaemonId) -> Result<Self> {
        Self::discover(&Procfs::host(), daemon)
    }

    /// The subtree of the process whose /proc/self is under `proc`.
    pub fn discover(proc: &Procfs, daemon: &DaemonId) -> Result<Self> {
        let layout = Layout::detect_in(proc)?;
        let own = proc.membership(None)?;
        Ok(Self::new(&layout, &own, daemon)?)
    }

    fn new(
        layout: &Layout,
        own: &Membership,
        daemon: &DaemonId,
    ) -> std::result::Result<Self, CgroupError> {
        // A daemon restarted inside the leaf an earlier one moved into
        // still serves the same subtree (and VPS cgroup level).
        let own_v2 = match own.v2.strip_suffix(&format!("/{DAEMON_LEAF}")) {
            Some("") => "/".to_owned(),
            Some(parent) => parent.to_owned(),
            None => own.v2.clone(),
        };
        let v2_parent = layout.unified_root()?.join(own_v2.trim_start_matches('/'));
        let placements = CONTROLLERS
            .iter()
            .filter_map(|&controller| {
                if layout.has_v2(controller) {
                    return Some(Placement {
                        controller,
                        version: Version::V2,
                        parent: v2_parent.clone(),
                    });
                }
                // The daemon's own v1 cgroup, then a directory of its own.
                let dir = layout.v1_dir(controller, own)?;
                Some(Placement {
                    controller,
                    version: Version::V1,
                    parent: dir.join(v1_parent_name(daemon)),
                })
            })
            .collect();
        Ok(Self {
            daemon: daemon.clone(),
            v2_parent,
            v2_parent_path: own_v2,
            placements,
        })
    }

    /// cgroup v2 depth of VPS cgroups (what the KSAL programs key on).
    pub fn vps_level(&self) -> u32 {
        depth(&self.v2_parent_path) + 1
    }

    pub fn v2_parent(&self) -> &Path {
        &self.v2_parent
    }

    /// Make the subtree ready: v2 controllers enabled for children (moving
    /// this process into a leaf of its own first, as v2 requires), v1
    /// parent directories created.
    pub fn prepare(&self) -> Result<()> {
        let v2: Vec<String> = self
            .placements
            .iter()
            .filter(|p| p.version == Version::V2)
            .map(|p| format!("+{}", p.controller))
            .collect();
        if !v2.is_empty() {
            if self.v2_parent_path != "/" {
                let leaf = self.v2_parent.join(DAEMON_LEAF);
                if !leaf.exists() {
                    fs::create_dir(&leaf).map_err(io_err("create", &leaf))?;
                }
                write(&leaf.join("cgroup.procs"), "0")?;
            }
            let control = self.v2_parent.join("cgroup.subtree_control");
            if let Err(e) = write(&control, &v2.join(" ")) {
                if let ManagerError::Io { source, .. } = &e
                    && source.raw_os_error() == Some(libc::EBUSY)
                {
                    return Err(ManagerError::Busy(self.v2_parent.display().to_string()));
                }
                return Err(e);
            }
        }
        for p in self.placements.iter().filter(|p| p.version == Version::V1) {
            fs::create_dir_all(&p.parent).map_err(io_err("create", &p.parent))?;
        }
        Ok(())
    }

    /// The cgroups of VPS `name` (not created yet).
    pub fn vps(&self, name: &str) -> VpsCgroup {
        let leaf = v2_name(&self.daemon, name);
        let v2 = self.v2_parent.join(&leaf);
        let v2_rel = format!("{}/{leaf}", self.v2_parent_path.trim_end_matches('/'));
        let controllers = self
            .placements
            .iter()
            .map(|p| {
                let dir = match p.version {
                    Version::V2 => v2.clone(),
                    Version::V1 => p.parent.join(name),
                };
                (p.controller, p.version, dir)
            })
            .collect();
        VpsCgroup {
            v2,
            v2_rel,
            controllers,
        }
    }

    /// Remove this daemon's (empty) v1 parent directories.
    pub fn remove_v1_parents(&self) {
        for p in self.placements.iter().filter(|p| p.version == Version::V1) {
            let _ = fs::remove_dir(&p.parent);
        }
    }
}

/// One VPS's cgroups.
#[derive(Debug, Clone)]
pub struct VpsCgroup {
    v2: PathBuf,
    /// The v2 path from the v2 root, as /proc/PID/cgroup shows it.
    v2_rel: String,
    controllers: Vec<(&'static str, Version, PathBuf)>,
}

/// Current usage, read from the controller files.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub nproc: u64,
}

impl VpsCgroup {
    pub fn v2_path(&self) -> &Path {
        &self.v2
    }

    pub fn v2_rel(&self) -> &str {
        &self.v2_rel
    }

    /// Hand the v2 cgroup over to the VPS's root (see [`super::delegate`]).
    pub fn delegate(&self, uid: u32, gid: u32) -> Result<()> {
        super::delegate::delegate(&self.v2, uid, gid).map_err(io_err("delegate", &self.v2))
    }

    /// The `cgroup.procs` files of the v1 cgroups (hybrid hosts), which a
    /// host-side join writes beside joining a leaf of the v2 cgroup.
    pub fn v1_procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .iter()
            .filter(|d| **d != self.v2)
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    pub fn id(&self) -> Result<u64> {
        Ok(id_of(&self.v2)?)
    }

    /// Every directory, v2 first, without duplicates.
    fn dirs(&self) -> Vec<&Path> {
        let mut dirs = vec![self.v2.as_path()];
        for (_, _, d) in &self.controllers {
            if !dirs.contains(&d.as_path()) {
                dirs.push(d);
            }
        }
        dirs
    }

    /// Create the cgroups, and in the v2 one the host's leaf for the
    /// VPS's helpers (see [`HOST_LEAF`]).
    pub fn create(&self) -> Result<()> {
        let leaf = self.v2.join(HOST_LEAF);
        for d in self.dirs().into_iter().chain([leaf.as_path()]) {
            if !d.exists() {
                fs::create_dir(d).map_err(io_err("create", d))?;
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` of the host's leaf in the v2 cgroup.
    pub fn host_leaf_procs(&self) -> PathBuf {
        self.v2.join(HOST_LEAF).join("cgroup.procs")
    }

    /// The `cgroup.procs` files a process writes "0" to in order to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs().iter().map(|d| d.join("cgroup.procs")).collect()
    }

    fn place(&self, controller: &str) -> Option<(Version, &Path)> {
        self.controllers
            .iter()
            .find(|(c, _, _)| *c == controller)
            .map(|(_, v, d)| (*v, d.as_path()))
    }

    /// Set one limit where its controller lives (`value` None resets it to
    /// unlimited); a limit without its controller is an error.
    fn set<T>(
        &self,
        controller: &'static str,
        limit: &'static str,
        value: Option<T>,
        write: impl FnOnce(Version, &Path, Option<T>) -> Result<()>,
    ) -> Result<()> {
        match (self.place(controller), &value) {
            (Some((version, dir)), _) => write(version, dir, value),
            (None, Some(_)) => Err(ManagerError::NoController { controller, limit }),
            (None, None) => Ok(()),
        }
    }

    /// Apply `limits` (None = unlimited).
    pub fn apply(&self, limits: &Limits) -> Result<()> {
        self.set("memory", "memory", limits.memory, Version::set_memory)?;
        let quota = limits
            .cpus
            .map(|c| ((c * CPU_PERIOD_US as f64) as u64).max(1000));
        self.set("cpu", "cpus", quota, Version::set_cpu)?;
        self.set("pids", "pids", limits.pids, Version::set_pids)
    }

    /// Processes in the VPS (its whole v2 subtree).
    pub fn pids(&self) -> Vec<u32> {
        fn walk(dir: &Path, out: &mut Vec<u32>) {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.v2, &mut out);
        out
    }

    /// Its directories, opened (see [`OpenCgroup`]).
    pub fn open(&self) -> OpenCgroup {
        let at = |controller| {
            self.place(controller)
                .and_then(|(v, d)| Some((v, CgroupDir::open(d)?)))
        };
        OpenCgroup {
            v2: CgroupDir::open(&self.v2),
            memory: at("memory"),
            pids: at("pids"),
        }
    }

    /// What the VPS uses now, from its cgroup files.
    pub fn accounting(&self) -> Accounting {
        self.open().accounting()
    }

    /// Tasks, as the numproc beancounter counts them: the pids
    /// controller's one file, or a walk of the subtree where there is none.
    pub fn usage(&self) -> Usage {
        Usage {
            nproc: self
                .open()
                .tasks()
                .unwrap_or_else(|| self.pids().len() as u64),
        }
    }

    /// Kill every process in the VPS and wait until none is left: through
    /// `cgroup.kill` (which also catches processes forked meanwhile), or,
    /// on kernels without it (before 5.14), one SIGKILL per process.
    pub fn kill_all(&self) {
        let deadline = Instant::now() + KILL_WAIT;
        let mut cgroup_kill = true;
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            if cgroup_kill && let Err(e) = crate::sys::cgroup_kill(&self.v2) {
                tracing::debug!(cgroup = %self.v2.display(), %e, "no cgroup.kill; killing each process");
                cgroup_kill = false;
            }
            if !cgroup_kill {
                for pid in pids {
                    let _ = crate::sys::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill what is left and remove every directory (children first).
    pub fn remove(&self) -> Result<()> {
        if !self.dirs().iter().any(|d| d.exists()) {
            return Ok(());
        }
        self.kill_all();
        for d in self.dirs() {
            remove_tree(d)?;
        }
        Ok(())
    }
}

fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for e in fs::read_dir(dir).map_err(io_err("list", dir))?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path())?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("remove", dir)(e)),
        }
    }
}
