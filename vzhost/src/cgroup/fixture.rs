//! Temporary directories laid out as a host's procfs and cgroupfs, for
//! unit tests: a hybrid host (v1 memory, cpu+cpuacct and pids hierarchies
//! beside a v2 tree without controllers, as on the development hosts) and
//! a pure v2 host. The daemon runs in v2 cgroup `/tests/daemon`.
use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{Procfs, manager::Hierarchy};
use crate::model::DaemonId;

pub struct Host {
    dir: tempfile::TempDir,
    /// Where the unified (v2) hierarchy is mounted.
    unified: PathBuf,
}

/// Write `files` (name, contents) into `dir`, creating it.
pub fn files(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (name, contents) in files {
        fs::write(dir.join(name), contents).unwrap();
    }
}

/// A file's contents, trimmed.
pub fn contents(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

pub fn daemon(name: &str) -> DaemonId {
    DaemonId::of_root(Path::new("/var/lib").join(name).as_path())
}

impl Host {
    fn new(mounts: &[(&str, &str, &str)], v2_controllers: &str, membership: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cg = dir.path().join("cgroup");
        let mut mountinfo = String::new();
        for (i, (target, fstype, options)) in mounts.iter().enumerate() {
            let target = cg.join(target);
            fs::create_dir_all(&target).unwrap();
            mountinfo.push_str(&format!(
                "{} 1 0:{i} / {} rw,relatime - {fstype} {fstype} rw,{options}\n",
                30 + i,
                target.display()
            ));
        }
        files(
            &dir.path().join("proc/self"),
            &[("mountinfo", &mountinfo), ("cgroup", membership)],
        );
        let (unified, _, _) = mounts.iter().find(|(_, t, _)| *t == "cgroup2").unwrap();
        let unified = cg.join(unified);
        files(&unified, &[("cgroup.controllers", v2_controllers)]);
        fs::create_dir_all(unified.join("tests/daemon")).unwrap();
        Self { dir, unified }
    }

    pub fn hybrid() -> Self {
        Self::new(
            &[
                ("unified", "cgroup2", "nsdelegate"),
                ("memory", "cgroup", "memory"),
                ("cpu,cpuacct", "cgroup", "cpu,cpuacct"),
                ("pids", "cgroup", "pids"),
            ],
            "",
            "5:pids:/\n4:memory:/system.slice/box\n3:cpu,cpuacct:/\n0::/tests/daemon\n",
        )
    }

    pub fn pure_v2(v2_controllers: &str) -> Self {
        Self::new(
            &[("", "cgroup2", "nsdelegate")],
            v2_controllers,
            "0::/tests/daemon\n",
        )
    }

    pub fn proc(&self) -> Procfs {
        Procfs::at(self.dir.path().join("proc"))
    }

    /// Replace the daemon's /proc/self/cgroup.
    pub fn set_membership(&self, text: &str) {
        files(&self.dir.path().join("proc/self"), &[("cgroup", text)]);
    }

    /// `path` in the cgroupfs mounted at `mount` ("" for the v2 root of a
    /// pure v2 host).
    pub fn cgroup(&self, mount: &str, path: &str) -> PathBuf {
        self.dir.path().join("cgroup").join(mount).join(path)
    }

    /// The daemon's own v2 cgroup.
    pub fn v2_parent(&self) -> PathBuf {
        self.unified.join("tests/daemon")
    }

    pub fn hierarchy(&self, daemon: &DaemonId) -> Hierarchy {
        Hierarchy::discover(&self.proc(), daemon).unwrap()
    }
}
