//! cgroups: where the hierarchies are mounted, which layout the host uses
//! (pure v2 or hybrid v1+v2), and the v2 identity of a cgroup, which is what
//! the KSAL programs key on. Every path starts from a [`Procfs`] root (the
//! host's `/proc`, or a directory of fixture files in tests) and from the
//! mount points its mountinfo names: nothing assumes `/sys/fs/cgroup`.
pub mod accounting;
mod controllers;
pub mod counters;
pub mod delegate;
#[cfg(test)]
mod fixture;
mod layout;
pub mod manager;
#[cfg(test)]
mod tests;

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

pub use layout::{Layout, Membership, V1Mount};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "no cgroup v2 hierarchy is mounted (looked in {mountinfo}); mount one with `mount -t cgroup2 none /sys/fs/cgroup`"
    )]
    NoUnified { mountinfo: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} has no cgroup v2 entry (`0::/...`): is cgroup v2 mounted?")]
    NoV2Membership { path: String },
}

pub type Result<T> = std::result::Result<T, CgroupError>;

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Where process information is read from: `/proc` on a host.
#[derive(Debug, Clone)]
pub struct Procfs {
    root: PathBuf,
}

impl Procfs {
    pub fn host() -> Self {
        Self::at("/proc")
    }

    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `FILE` of process `pid`, or of the caller with `None`.
    fn file(&self, pid: Option<u32>, name: &str) -> PathBuf {
        let dir = pid.map_or_else(|| "self".to_owned(), |p| p.to_string());
        self.root.join(dir).join(name)
    }

    /// The caller's mount table, which names every cgroup mount.
    pub fn mountinfo(&self) -> Result<(String, PathBuf)> {
        let path = self.file(None, "mountinfo");
        Ok((read(&path)?, path))
    }

    /// The cgroups process `pid` (or the caller) belongs to.
    pub fn membership(&self, pid: Option<u32>) -> Result<Membership> {
        let path = self.file(pid, "cgroup");
        Membership::parse(&read(&path)?).ok_or_else(|| CgroupError::NoV2Membership {
            path: path.display().to_string(),
        })
    }
}

/// The v2 cgroup path (relative to the v2 root, starting with `/`) of
/// process `pid`, or of the caller with `None`.
pub fn v2_path_of(pid: Option<u32>) -> Result<String> {
    Ok(Procfs::host().membership(pid)?.v2)
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
