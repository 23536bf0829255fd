//! Which cgroup hierarchies the host mounts where (from a mountinfo), which
//! cgroups a process is in (from its /proc/PID/cgroup), and from both, the
//! hybrid lookup: in which v1 directory a process's controller lives.
//! Parsing only; the files are read by [`super::Procfs`].
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{CgroupError, Procfs, Result, read};

/// cgroup v1 controller names, to tell them from mount options.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// One v1 controller's hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct V1Mount {
    pub controller: String,
    /// Where it is mounted.
    pub target: PathBuf,
    /// Which cgroup of the hierarchy appears at `target` (`/` unless a
    /// subtree was bind-mounted).
    pub root: PathBuf,
}

/// How the host arranges its cgroup hierarchies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// Where the v2 (unified) hierarchy is mounted.
    pub unified: Option<PathBuf>,
    /// Controllers available in the v2 hierarchy.
    pub v2_controllers: Vec<String>,
    /// v1 controllers and where each is mounted.
    pub v1: Vec<V1Mount>,
    /// The mountinfo this was read from, for error messages.
    #[serde(skip)]
    source: String,
}

impl Layout {
    /// The host's layout, as the caller's /proc/self/mountinfo shows it.
    pub fn detect() -> Result<Self> {
        Self::detect_in(&Procfs::host())
    }

    pub fn detect_in(proc: &Procfs) -> Result<Self> {
        let (info, path) = proc.mountinfo()?;
        let mut layout = Self::from_mountinfo(&info);
        layout.source = path.display().to_string();
        if let Some(root) = &layout.unified {
            let list = read(&root.join("cgroup.controllers")).unwrap_or_default();
            layout.v2_controllers = list.split_whitespace().map(str::to_owned).collect();
        }
        Ok(layout)
    }

    pub fn from_mountinfo(info: &str) -> Self {
        let mut layout = Self {
            unified: None,
            v2_controllers: Vec::new(),
            v1: Vec::new(),
            source: "mountinfo".to_owned(),
        };
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mut left = left.split(' ').skip(3);
            let (Some(root), Some(target)) = (left.next(), left.next()) else {
                continue;
            };
            let mut right = right.split(' ');
            let fstype = right.next().unwrap_or_default();
            let options = right.nth(1).unwrap_or_default();
            match fstype {
                "cgroup2" if layout.unified.is_none() => layout.unified = Some(target.into()),
                "cgroup" => {
                    for opt in options.split(',').filter(|o| V1_CONTROLLERS.contains(o)) {
                        layout.v1.push(V1Mount {
                            controller: opt.to_owned(),
                            target: target.into(),
                            root: root.into(),
                        });
                    }
                }
                _ => {}
            }
        }
        layout
    }

    /// "pure v2", "hybrid" or "v1 only".
    pub fn kind(&self) -> &'static str {
        match (self.unified.is_some(), self.v1.is_empty()) {
            (true, true) => "pure v2",
            (true, false) => "hybrid",
            (false, _) => "v1 only",
        }
    }

    pub fn unified_root(&self) -> Result<&Path> {
        self.unified
            .as_deref()
            .ok_or_else(|| CgroupError::NoUnified {
                mountinfo: self.source.clone(),
            })
    }

    pub fn has_v2(&self, controller: &str) -> bool {
        self.v2_controllers.iter().any(|c| c == controller)
    }

    /// The directory of the v1 hierarchy of `controller` that holds a
    /// process with membership `of` (its hierarchy's root when the process
    /// has no entry for it); None without such a hierarchy.
    pub fn v1_dir(&self, controller: &str, of: &Membership) -> Option<PathBuf> {
        let mount = self.v1.iter().find(|m| m.controller == controller)?;
        let own = Path::new(of.v1(controller).unwrap_or("/"));
        let rel = own.strip_prefix(&mount.root).unwrap_or(own);
        Some(mount.target.join(rel.strip_prefix("/").unwrap_or(rel)))
    }
}

/// The cgroups of one process, from its /proc/PID/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The v2 path, relative to the v2 root, starting with `/`.
    pub v2: String,
    /// Each v1 hierarchy's controllers and path.
    v1: Vec<(Vec<String>, String)>,
}

impl Membership {
    /// None when there is no v2 entry (`0::/...`).
    pub fn parse(text: &str) -> Option<Self> {
        let mut v2 = None;
        let mut v1 = Vec::new();
        for line in text.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if id == "0" && controllers.is_empty() {
                v2 = Some(path.to_owned());
            } else {
                let names = controllers.split(',').map(str::to_owned).collect();
                v1.push((names, path.to_owned()));
            }
        }
        Some(Self { v2: v2?, v1 })
    }

    /// The path in the v1 hierarchy of `controller`.
    pub fn v1(&self, controller: &str) -> Option<&str> {
        self.v1
            .iter()
            .find(|(names, _)| names.iter().any(|n| n == controller))
            .map(|(_, path)| path.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
28 25 0:25 /lxc/c1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd";

    const MEMBERSHIP: &str = "\
9:name=systemd:/user.slice
4:memory:/lxc/c1/daemon
2:cpu,cpuacct:/work
0::/user.slice/vz";

    #[test]
    fn detects_hybrid() {
        let l = Layout::from_mountinfo(HYBRID);
        assert_eq!(l.kind(), "hybrid");
        assert_eq!(
            l.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        let names: Vec<_> = l.v1.iter().map(|m| m.controller.as_str()).collect();
        assert_eq!(names, ["cpu", "cpuacct", "memory"]);
    }

    #[test]
    fn detects_pure_v2() {
        let l = Layout::from_mountinfo("30 1 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw");
        assert_eq!(l.kind(), "pure v2");
        assert!(l.unified_root().is_ok());
        assert!(matches!(
            Layout::from_mountinfo("").unified_root(),
            Err(CgroupError::NoUnified { .. })
        ));
    }

    #[test]
    fn membership_separates_v2_from_v1_hierarchies() {
        let m = Membership::parse(MEMBERSHIP).unwrap();
        assert_eq!(m.v2, "/user.slice/vz");
        assert_eq!(m.v1("cpuacct"), Some("/work"));
        assert_eq!(m.v1("memory"), Some("/lxc/c1/daemon"));
        assert_eq!(m.v1("pids"), None);
        assert_eq!(Membership::parse("4:memory:/a\n"), None);
    }

    #[test]
    fn hybrid_lookup_finds_the_processs_own_v1_directory() {
        let l = Layout::from_mountinfo(HYBRID);
        let m = Membership::parse(MEMBERSHIP).unwrap();
        // Shared mount of cpu and cpuacct: the process's path under it.
        assert_eq!(
            l.v1_dir("cpu", &m),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/work"))
        );
        // A bind-mounted subtree: the path is relative to the mount's root.
        assert_eq!(
            l.v1_dir("memory", &m),
            Some(PathBuf::from("/sys/fs/cgroup/memory/daemon"))
        );
        // No entry for a mounted controller: its hierarchy's root.
        let bare = Membership::parse("0::/").unwrap();
        assert_eq!(
            l.v1_dir("memory", &bare),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        // Not mounted as v1 at all.
        assert_eq!(l.v1_dir("pids", &m), None);
    }
}
