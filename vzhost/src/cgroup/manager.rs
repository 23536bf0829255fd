//! Per-VPS cgroups under the daemon's own cgroup. Each controller vzhost
//! uses (memory, cpu, pids) is driven where the host has it: in the v2
//! tree, or in its v1 hierarchy on hybrid hosts. The v2 cgroup always
//! exists: it is the VPS's identity for the KSAL programs.
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{CgroupError, Layout, depth, id_of, v2_path_of};
use crate::model::Limits;

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

/// Controllers vzhost sets limits with.
pub const CONTROLLERS: &[&str] = &["memory", "cpu", "pids"];
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Version {
    V1,
    V2,
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
    v2_parent: PathBuf,
    v2_parent_path: String,
    placements: Vec<Placement>,
}

impl Hierarchy {
    /// The subtree rooted at the calling process's own cgroups.
    pub fn for_current_process() -> Result<Self> {
        let layout = Layout::detect()?;
        let own = v2_path_of(None)?;
        // A daemon restarted inside the leaf an earlier one moved into
        // still serves the same subtree (and VPS cgroup level).
        let own = match own.strip_suffix(&format!("/{DAEMON_LEAF}")) {
            Some("") => "/".to_owned(),
            Some(parent) => parent.to_owned(),
            None => own,
        };
        let v2_parent = layout.unified_root()?.join(own.trim_start_matches('/'));
        let v2_parent_id = id_of(&v2_parent)?;
        let mut placements = Vec::new();
        for controller in CONTROLLERS {
            if layout.v2_controllers.iter().any(|c| c == controller) {
                placements.push(Placement {
                    controller,
                    version: Version::V2,
                    parent: v2_parent.clone(),
                });
            } else if let Some((_, mount)) = layout.v1.iter().find(|(c, _)| c == controller) {
                // This process's path in that v1 hierarchy, then a directory
                // of this daemon's own (keyed by its v2 cgroup) so daemons
                // sharing a v1 cgroup never collide.
                placements.push(Placement {
                    controller,
                    version: Version::V1,
                    parent: v1_dir_of(mount, controller).join(v1_parent_name(v2_parent_id)),
                });
            }
        }
        Ok(Self {
            v2_parent,
            v2_parent_path: own,
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
        let v2: Vec<&str> = self
            .placements
            .iter()
            .filter(|p| p.version == Version::V2)
            .map(|p| p.controller)
            .collect();
        if !v2.is_empty() && self.v2_parent_path != "/" {
            let leaf = self.v2_parent.join(DAEMON_LEAF);
            if !leaf.exists() {
                fs::create_dir(&leaf).map_err(io_err("create", &leaf))?;
            }
            write(&leaf.join("cgroup.procs"), "0")?;
        }
        let control = self.v2_parent.join("cgroup.subtree_control");
        for c in v2 {
            if let Err(e) = write(&control, &format!("+{c}")) {
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
        VpsCgroup {
            v2: self.v2_parent.join(name),
            controllers: self
                .placements
                .iter()
                .map(|p| (p.controller, p.version, p.parent.join(name)))
                .collect(),
        }
    }

    /// Remove this daemon's (empty) v1 parent directories.
    pub fn remove_v1_parents(&self) {
        for p in self.placements.iter().filter(|p| p.version == Version::V1) {
            let _ = fs::remove_dir(&p.parent);
        }
    }
}

/// This process's own cgroup in the v1 hierarchy of `controller`, mounted
/// at `mount` (the hierarchy's root when /proc/self/cgroup has no entry).
pub fn v1_dir_of(mount: &Path, controller: &str) -> PathBuf {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let rel = own
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            f.nth(1).zip(f.next())
        })
        .find(|(ctrls, _)| ctrls.split(',').any(|c| c == controller))
        .map_or("/", |(_, p)| p);
    mount.join(rel.trim_start_matches('/'))
}

/// Name of a daemon's directory in each v1 hierarchy.
pub fn v1_parent_name(v2_parent_id: u64) -> String {
    format!("vzhost-{v2_parent_id}")
}

/// One VPS's cgroups.
#[derive(Debug, Clone)]
pub struct VpsCgroup {
    v2: PathBuf,
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

    pub fn create(&self) -> Result<()> {
        for d in self.dirs() {
            if !d.exists() {
                fs::create_dir(d).map_err(io_err("create", d))?;
            }
        }
        Ok(())
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

    fn need(&self, controller: &'static str, limit: &'static str) -> Result<(Version, &Path)> {
        self.place(controller)
            .ok_or(ManagerError::NoController { controller, limit })
    }

    /// Apply `limits` (None = unlimited).
    pub fn apply(&self, limits: &Limits) -> Result<()> {
        if limits.memory.is_some() || self.place("memory").is_some() {
            let (v, d) = self.need("memory", "memory")?;
            let value = limits.memory.map(|m| m.to_string());
            match v {
                Version::V2 => {
                    write(&d.join("memory.max"), value.as_deref().unwrap_or("max"))?;
                    // No swap escape from the memory limit.
                    if d.join("memory.swap.max").exists() {
                        write(
                            &d.join("memory.swap.max"),
                            if limits.memory.is_some() { "0" } else { "max" },
                        )?;
                    }
                }
                Version::V1 => write(
                    &d.join("memory.limit_in_bytes"),
                    value.as_deref().unwrap_or("-1"),
                )?,
            }
        }
        if limits.cpus.is_some() || self.place("cpu").is_some() {
            let (v, d) = self.need("cpu", "cpus")?;
            let quota = limits
                .cpus
                .map(|c| ((c * CPU_PERIOD_US as f64) as u64).max(1000));
            match v {
                Version::V2 => write(
                    &d.join("cpu.max"),
                    &match quota {
                        Some(q) => format!("{q} {CPU_PERIOD_US}"),
                        None => format!("max {CPU_PERIOD_US}"),
                    },
                )?,
                Version::V1 => {
                    write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(
                        &d.join("cpu.cfs_quota_us"),
                        &quota.map_or("-1".to_owned(), |q| q.to_string()),
                    )?;
                }
            }
        }
        if limits.pids.is_some() || self.place("pids").is_some() {
            let (_, d) = self.need("pids", "pids")?;
            write(
                &d.join("pids.max"),
                &limits.pids.map_or("max".to_owned(), |p| p.to_string()),
            )?;
        }
        Ok(())
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

    /// What the VPS uses now, from its cgroup files.
    pub fn accounting(&self) -> super::accounting::Accounting {
        use super::accounting as acct;
        let (cpu_user_usec, cpu_system_usec) = acct::cpu(&self.v2);
        let (memory, memory_events) = match self.place("memory") {
            Some((Version::V2, d)) => acct::memory_v2(d),
            Some((Version::V1, d)) => acct::memory_v1(d),
            None => Default::default(),
        };
        acct::Accounting {
            cpu_user_usec,
            cpu_system_usec,
            memory,
            memory_events,
            processes: self
                .place("pids")
                .map(|(_, d)| acct::pids(d))
                .unwrap_or_default(),
        }
    }

    pub fn usage(&self) -> Usage {
        Usage {
            nproc: self.pids().len() as u64,
        }
    }

    /// Kill every process in the VPS and wait until none is left.
    pub fn kill_all(&self) {
        let kill_file = self.v2.join("cgroup.kill");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            if kill_file.exists() {
                let _ = fs::write(&kill_file, "1");
            } else {
                for pid in pids {
                    // SAFETY: sending a signal has no memory effects.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
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
