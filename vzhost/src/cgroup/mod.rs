//! cgroups: where the hierarchies are mounted, which layout the host uses
//! (pure v2 or hybrid v1+v2), and the v2 identity of a cgroup, which is what
//! the KSAL programs key on.
pub mod accounting;
pub mod manager;

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup`"
    )]
    NoUnified,
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} has no cgroup v2 entry (`0::/...`)")]
    NoV2Membership { path: String },
}

pub type Result<T> = std::result::Result<T, CgroupError>;

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.display().to_string(),
        source,
    })
}

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

/// How the host arranges its cgroup hierarchies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// Where the v2 (unified) hierarchy is mounted.
    pub unified: Option<PathBuf>,
    /// Controllers available in the v2 hierarchy.
    pub v2_controllers: Vec<String>,
    /// v1 controllers and where each is mounted.
    pub v1: Vec<(String, PathBuf)>,
}

impl Layout {
    pub fn detect() -> Result<Self> {
        let info = read(Path::new("/proc/self/mountinfo"))?;
        let mut layout = Self::from_mountinfo(&info);
        if let Some(root) = &layout.unified {
            let list = read(&root.join("cgroup.controllers")).unwrap_or_default();
            layout.v2_controllers = list.split_whitespace().map(str::to_owned).collect();
        }
        Ok(layout)
    }

    fn from_mountinfo(info: &str) -> Self {
        let mut layout = Self {
            unified: None,
            v2_controllers: Vec::new(),
            v1: Vec::new(),
        };
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(target) = left.split(' ').nth(4) else {
                continue;
            };
            let mut right = right.split(' ');
            let fstype = right.next().unwrap_or_default();
            let options = right.nth(1).unwrap_or_default();
            match fstype {
                "cgroup2" if layout.unified.is_none() => layout.unified = Some(target.into()),
                "cgroup" => {
                    for opt in options.split(',').filter(|o| V1_CONTROLLERS.contains(o)) {
                        layout.v1.push((opt.to_owned(), target.into()));
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
        self.unified.as_deref().ok_or(CgroupError::NoUnified)
    }
}

/// The v2 cgroup path (relative to the v2 root, starting with `/`) of
/// process `pid`, or of the caller with `None`.
pub fn v2_path_of(pid: Option<u32>) -> Result<String> {
    let file = match pid {
        Some(pid) => PathBuf::from(format!("/proc/{pid}/cgroup")),
        None => PathBuf::from("/proc/self/cgroup"),
    };
    read(&file)?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .ok_or_else(|| CgroupError::NoV2Membership {
            path: file.display().to_string(),
        })
}

/// Depth of a v2 cgroup path: `/` is 0, `/a` is 1, `/a/b` is 2.
pub fn depth(v2_path: &str) -> u32 {
    v2_path.split('/').filter(|s| !s.is_empty()).count() as u32
}

/// The cgroup v2 id of a cgroup directory: its inode number on cgroupfs,
/// which is what `bpf_get_current_ancestor_cgroup_id` returns.
pub fn id_of(dir: &Path) -> Result<u64> {
    std::fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|source| CgroupError::Read {
            path: dir.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
28 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
29 25 0:26 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd";

    #[test]
    fn detects_hybrid() {
        let l = Layout::from_mountinfo(HYBRID);
        assert_eq!(l.kind(), "hybrid");
        assert_eq!(
            l.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        let names: Vec<_> = l.v1.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, ["cpu", "cpuacct", "memory"]);
    }

    #[test]
    fn detects_pure_v2() {
        let l = Layout::from_mountinfo("30 1 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw");
        assert_eq!(l.kind(), "pure v2");
        assert!(l.unified_root().is_ok());
        assert!(matches!(
            Layout::from_mountinfo("").unified_root(),
            Err(CgroupError::NoUnified)
        ));
    }

    #[test]
    fn depth_counts_components() {
        assert_eq!(depth("/"), 0);
        assert_eq!(depth("/a"), 1);
        assert_eq!(depth("/a/b/"), 2);
    }
}
