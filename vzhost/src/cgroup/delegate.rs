//! Delegation of a VPS's v2 cgroup to the VPS's root, so the service
//! manager inside (systemd) can run its own tree, and the host's way back
//! in once it does.
//!
//! What is handed over is what the kernel lists as delegatable
//! (/sys/kernel/cgroup/delegate, systemd's "cgroup delegation" document):
//! the directory (to make and remove child cgroups) and the files that
//! move processes and enable controllers below. Every limit file (memory.max,
//! pids.max, cpu.max, io.*) stays the host's: VPS root, not host root in its
//! user namespace, gets EACCES on them (and EPERM where the mount has
//! nsdelegate), so it cannot raise its own limits. Moving a process needs
//! write access to the common ancestor's cgroup.procs, which outside the
//! VPS's cgroup is the host's: processes cannot leave. The VPS's cgroup
//! namespace makes its cgroup the root of what it sees.
//!
//! Once systemd enables controllers in the VPS's cgroup it is an inner
//! node, where v2 allows no process: a host-side join then goes to the
//! cgroup of the VPS's PID 1, resolved beneath the VPS's cgroup directory
//! by the kernel (the names below are the VPS's to choose).
use std::{
    io::{self, Write as _},
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
};

use super::Membership;

/// The files of a VPS's cgroup its root gets, where the kernel has them.
pub const DELEGATED: &[&str] = &[
    "cgroup.procs",
    "cgroup.threads",
    "cgroup.subtree_control",
    "memory.oom.group",
    "memory.reclaim",
];

/// How deep and how large the tree a VPS makes below its cgroup may grow
/// (systemd nests some six levels and makes a cgroup per unit): enough for
/// any service manager, and bounded for the host's walks over it.
const TREE_LIMITS: &[(&str, &str)] = &[
    ("cgroup.max.depth", "32"),
    ("cgroup.max.descendants", "4096"),
];

/// Give cgroup directory `dir` and its [`DELEGATED`] files to `uid`:`gid`
/// (the host ids of the VPS's root), with its tree bounded. Called before
/// anything of the VPS runs, on a directory the host just made: nothing
/// in it is the VPS's.
pub fn delegate(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    for (file, limit) in TREE_LIMITS {
        std::fs::write(dir.join(file), limit)?;
    }
    let own = |p: &Path| std::os::unix::fs::lchown(p, Some(uid), Some(gid));
    for file in DELEGATED {
        match own(&dir.join(file)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            r => r?,
        }
    }
    own(dir)
}

/// Where in a VPS's cgroup `vps_path` (v2 path from the v2 root) a
/// process whose /proc/PID/cgroup reads `membership` is: the path below
/// it, "" for the VPS's cgroup itself; None when it is not inside.
pub fn below(vps_path: &str, membership: &str) -> Option<String> {
    let own = Membership::parse(membership)?.v2;
    let rest = own.strip_prefix(vps_path.trim_end_matches('/'))?;
    if rest.is_empty() {
        return Some(String::new());
    }
    let rest = rest.strip_prefix('/')?;
    // What the kernel shows for a removed cgroup, or names no path can
    // hold: nothing to join.
    if rest.ends_with(" (deleted)") || rest.split('/').any(|p| p.is_empty() || p == "..") {
        return None;
    }
    Some(rest.to_owned())
}

/// Move the calling process into the cgroup `rel` beneath `vps_dir` (the
/// VPS's v2 cgroup directory): resolved by the kernel beneath it, never
/// through a symlink, a magic link or another mount.
pub fn join_beneath(vps_dir: &Path, rel: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = OwnedFd::from(
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(vps_dir)?,
    );
    let procs = if rel.is_empty() {
        "cgroup.procs".to_owned()
    } else {
        format!("{rel}/cgroup.procs")
    };
    let resolve = libc::RESOLVE_BENEATH
        | libc::RESOLVE_NO_SYMLINKS
        | libc::RESOLVE_NO_MAGICLINKS
        | libc::RESOLVE_NO_XDEV;
    let fd = crate::sys::openat2(
        dir.as_fd(),
        &procs,
        libc::O_WRONLY | libc::O_NOFOLLOW,
        0,
        resolve,
    )?;
    std::fs::File::from(fd).write_all(b"0")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;
    use crate::sys::{Call, fake::Fake};

    #[test]
    fn delegation_hands_over_the_directory_and_procs_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            "cgroup.procs",
            "cgroup.threads",
            "cgroup.subtree_control",
            "memory.max",
            "pids.max",
            "cpu.max",
            "memory.swap.max",
        ];
        for f in files {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
        // Giving to one's own ids works unprivileged; the owner is what
        // changes for a VPS, so the test checks which paths were touched
        // through their ctime.
        let before: Vec<_> = files
            .iter()
            .map(|f| std::fs::metadata(dir.path().join(f)).unwrap().ctime_nsec())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        delegate(dir.path(), uid.as_raw(), gid.as_raw()).unwrap();
        for (f, b) in files.iter().zip(before) {
            let changed = std::fs::metadata(dir.path().join(f)).unwrap().ctime_nsec() != b;
            assert_eq!(changed, DELEGATED.contains(f), "{f}");
        }
        let read = |f| std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert_eq!(read("cgroup.max.depth"), "32");
        assert_eq!(read("cgroup.max.descendants"), "4096");
    }

    #[test]
    fn a_process_below_the_vps_cgroup_is_found_by_its_relative_path() {
        let vps = "/tests/daemon/vz-1-a";
        assert_eq!(below(vps, "0::/tests/daemon/vz-1-a\n").as_deref(), Some(""));
        assert_eq!(
            below(vps, "1:pids:/x\n0::/tests/daemon/vz-1-a/init.scope\n").as_deref(),
            Some("init.scope")
        );
        // A neighbour whose name starts alike is not inside.
        assert_eq!(below(vps, "0::/tests/daemon/vz-1-ab/init.scope\n"), None);
        assert_eq!(below(vps, "0::/tests/daemon\n"), None);
        assert_eq!(below(vps, "0::/tests/daemon/vz-1-a/gone (deleted)\n"), None);
    }

    #[test]
    fn the_join_resolves_beneath_the_vps_cgroup_without_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("init.scope")).unwrap();
        let fake = Fake::install(|_| None);
        // Unprivileged: the plain files stand in for cgroup.procs.
        std::fs::write(dir.path().join("init.scope/cgroup.procs"), "").unwrap();
        join_beneath(dir.path(), "init.scope").unwrap();
        let calls = fake.calls();
        let [Call::Openat2 { path, resolve }] = calls.as_slice() else {
            panic!("one openat2: {calls:?}");
        };
        assert_eq!(path, "init.scope/cgroup.procs");
        assert_eq!(
            *resolve & (libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS),
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("init.scope/cgroup.procs")).unwrap(),
            "0"
        );
    }

    #[test]
    fn a_symlink_below_the_vps_cgroup_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("cgroup.procs"), "").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("leaf")).unwrap();
        let err = join_beneath(dir.path(), "leaf").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
        assert_eq!(
            std::fs::read_to_string(outside.path().join("cgroup.procs")).unwrap(),
            ""
        );
        let err = join_beneath(dir.path(), "../x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
    }
}
