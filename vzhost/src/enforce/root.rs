//! The root a VPS's file rules are resolved in, captured once at launch.
//!
//! Resolving through `/proc/<init>/root` at each reload would let the VPS
//! choose what a rule protects: an init that chroots into a decoy tree, or
//! bind-mounts a decoy `/etc` over `/etc`, would get the rules keyed on the
//! decoy's inodes. So while PID 1 is held (its root built, nothing of the
//! VPS run yet) the host takes a private clone of the VPS's root mount: the
//! same filesystem (so the same device and inode numbers the hooks see),
//! but no mounts on top and no way for the VPS to change it. Paths are
//! resolved in it with RESOLVE_IN_ROOT, so symlinks and `..` stay inside.
use std::{
    io,
    os::fd::{AsFd as _, OwnedFd},
};

use crate::sys;

/// A VPS's root directory, as a file descriptor the VPS cannot touch.
#[derive(Debug)]
pub struct VpsRoot(OwnedFd);

impl VpsRoot {
    /// The root of process `pid`. Called for a held PID 1, before the VPS
    /// ran anything, this is the root the VPS was built with.
    ///
    /// Limitation: after a daemon restart (adopting a running VPS) there
    /// is no root captured at launch, so this is called for a PID 1 that
    /// has run: one that chrooted meanwhile has its decoy taken as the
    /// root (mounts it made on top are still left out).
    ///
    /// `/proc/<pid>` is the host's procfs, so the VPS names nothing on the
    /// way; what could change is whose pid it is. A pidfd taken first and
    /// checked against `start` (the init's start time) before, and for
    /// life after, the opens pins the process they read.
    pub fn capture(pid: u32, start: u64) -> io::Result<Self> {
        let gone = || io::Error::new(io::ErrorKind::NotFound, format!("process {pid} is gone"));
        let pidfd = sys::pin_process(pid, start).ok_or_else(gone)?;
        let root = open_dir(&format!("/proc/{pid}/root"))?;
        let mnt_ns = OwnedFd::from(std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?);
        sys::pidfd_send_signal(pidfd.as_fd(), 0).map_err(|_| gone())?;
        match sys::clone_mount_in(mnt_ns.as_fd(), root.as_fd()) {
            Ok(clone) => Ok(Self(clone)),
            Err(e) => {
                // Still better than a path: the VPS's chroot cannot move
                // it, though mounts it makes later show through.
                tracing::warn!(
                    pid,
                    "cannot clone the VPS's root mount ({e}); file rules resolve in its root directory, which later mounts inside the VPS can cover"
                );
                Ok(Self(root))
            }
        }
    }

    /// (st_dev, st_ino) of `path` inside this root.
    pub fn stat(&self, path: &str) -> io::Result<(u64, u64)> {
        sys::stat_in(self.0.as_fd(), path)
    }

    #[cfg(test)]
    pub fn of_dir(dir: &std::path::Path) -> io::Result<Self> {
        open_dir(&dir.display().to_string()).map(Self)
    }
}

fn open_dir(path: &str) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_root_whatever_the_links_say() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "vps\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("etc/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", root.join("etc/up")).unwrap();
        let vps = VpsRoot::of_dir(&root).unwrap();
        let inside = {
            use std::os::unix::fs::MetadataExt as _;
            let m = std::fs::metadata(root.join("etc/passwd")).unwrap();
            (m.dev(), m.ino())
        };
        assert_eq!(vps.stat("/etc/passwd").unwrap(), inside);
        assert_eq!(vps.stat("/etc/abs").unwrap(), inside, "absolute link");
        assert_eq!(
            vps.stat("/etc/up").unwrap(),
            inside,
            "`..` stops at the root"
        );
        assert_eq!(
            vps.stat("/etc/missing").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn the_root_is_the_directory_held_not_its_path() {
        // A root swapped under the same path later (as a VPS could do to
        // what /proc/PID/root leads to) leaves the held root as it was.
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/shadow"), "real\n").unwrap();
        let vps = VpsRoot::of_dir(&root).unwrap();
        let before = vps.stat("/etc/shadow").unwrap();
        std::fs::rename(&root, dir.path().join("moved")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/shadow"), "decoy\n").unwrap();
        assert_eq!(vps.stat("/etc/shadow").unwrap(), before);
    }
}
