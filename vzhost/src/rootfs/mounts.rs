//! The mounts that make a VPS's root, in two stages:
//! 1. as host root in a private mount namespace: the template, idmapped into
//!    the VPS's user namespace, as overlay lower layer under the VPS's upper;
//! 2. as the VPS's PID 1 (inside its user, mount, PID and network
//!    namespaces): /proc, read-only /sys with the VPS's cgroup2 at
//!    /sys/fs/cgroup, a minimal /dev, /dev/pts, /dev/shm, /run, then
//!    pivot_root; then its console ([`bind_console`]).
//!
//! Stage 1 leaves the launcher's cwd in the overlay, and stage 2 works from
//! there with relative paths: PID 1 is the VPS's root, which cannot (and
//! must not) look up a path through the host's private state directory.
use std::{
    fs,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd},
        unix::fs::symlink,
    },
    path::Path,
};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::{model::VpsDir, sys};

#[derive(Debug, thiserror::Error)]
#[error("{step} ({path}): {source}")]
pub struct MountError {
    step: &'static str,
    path: String,
    source: std::io::Error,
}

pub type Result<T> = std::result::Result<T, MountError>;

fn err(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MountError {
    let path = path.display().to_string();
    move |source| MountError { step, path, source }
}

fn nix_err(step: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> MountError {
    let f = err(step, path);
    move |e| f(std::io::Error::from(e))
}

/// Stage 1: mount the VPS's overlay root at `dir.rootfs()`.
pub fn mount_overlay(
    dir: &VpsDir,
    template: &Path,
    userns: std::os::fd::BorrowedFd<'_>,
) -> Result<()> {
    let tree =
        sys::open_tree_clone(template).map_err(err("open_tree of the template", template))?;
    sys::idmap_readonly(tree.as_fd(), userns).map_err(err(
        "idmapping the template (its filesystem must support idmapped mounts: ext4, xfs, btrfs, or tmpfs on Linux 6.3+)",
        template,
    ))?;
    sys::move_mount_to(tree.as_fd(), &dir.lower())
        .map_err(err("move_mount of the template", &dir.lower()))?;
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.lower().display(),
        dir.upper().display(),
        dir.work().display()
    );
    mount(
        Some("overlay"),
        &dir.rootfs(),
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(nix_err("mount overlay", &dir.rootfs()))?;
    std::env::set_current_dir(dir.rootfs()).map_err(err("enter the overlay", &dir.rootfs()))
}

const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Stage 2, run as the VPS's PID 1 with its cwd in the overlay at
/// `rootfs` (named for messages only): finish the root and pivot into it.
pub fn finish_root(rootfs: &Path) -> Result<()> {
    // The overlay came from the host's mount namespace, so here it is
    // locked, and pivot_root refuses a locked root: a clone of this
    // namespace's own goes on top of it, and PID 1 moves into the clone.
    let here = Path::new(".");
    let root = sys::open_tree_clone(here).map_err(err("clone the root", rootfs))?;
    sys::move_mount_to(root.as_fd(), here).map_err(err("mount the root's clone", rootfs))?;
    nix::unistd::fchdir(&root).map_err(nix_err("enter the root's clone", rootfs))?;
    let at = Path::new;
    for d in ["proc", "sys", "dev", "run", "tmp"] {
        fs::create_dir_all(at(d)).map_err(err("mkdir", at(d)))?;
    }
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("proc"),
        at("proc"),
        Some("proc"),
        hardened,
        None::<&str>,
    )
    .map_err(nix_err("mount proc", at("proc")))?;
    mount(
        Some("sysfs"),
        at("sys"),
        Some("sysfs"),
        hardened | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(nix_err("mount sysfs read-only", at("sys")))?;
    // The VPS's own cgroup as the root of a cgroup2 mount (its cgroup
    // namespace was made after it joined): what systemd runs its tree in.
    // Read-write; the host's ownership of the limit files keeps them.
    mount(
        Some("cgroup2"),
        at("sys/fs/cgroup"),
        Some("cgroup2"),
        hardened,
        None::<&str>,
    )
    .map_err(nix_err("mount cgroup2", at("sys/fs/cgroup")))?;

    mount(
        Some("tmpfs"),
        at("dev"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=65536k"),
    )
    .map_err(nix_err("mount /dev", at("dev")))?;
    // Device nodes cannot be made in a user namespace: bind the host's.
    // (/dev/console is the VPS's own pty: see `bind_console`.)
    for dev in DEVICES {
        let target = at("dev").join(dev);
        fs::File::create(&target).map_err(err("create", &target))?;
        let source = format!("/dev/{dev}");
        mount(
            Some(source.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_err("bind device", &target))?;
    }
    for d in ["pts", "shm"] {
        fs::create_dir(at("dev").join(d)).map_err(err("mkdir", &at("dev").join(d)))?;
    }
    mount(
        Some("devpts"),
        at("dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .map_err(nix_err("mount devpts", at("dev/pts")))?;
    mount(
        Some("tmpfs"),
        at("dev/shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777,size=65536k"),
    )
    .map_err(nix_err("mount /dev/shm", at("dev/shm")))?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, at("dev").join(link)).map_err(err("symlink", &at("dev").join(link)))?;
    }
    mount(
        Some("tmpfs"),
        at("run"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755,size=65536k"),
    )
    .map_err(nix_err("mount /run", at("run")))?;

    nix::unistd::pivot_root(".", ".").map_err(nix_err("pivot_root", rootfs))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(nix_err("detach the old root", rootfs))?;
    std::env::set_current_dir("/").map_err(err("chdir", Path::new("/")))?;
    Ok(())
}

/// As the VPS's PID 1 in its finished root: bind `peer`, a pty of the
/// VPS's own devpts, at /dev/console.
pub fn bind_console(peer: BorrowedFd<'_>) -> Result<()> {
    let target = Path::new("/dev/console");
    fs::File::create(target).map_err(err("create", target))?;
    let source = format!("/proc/self/fd/{}", peer.as_raw_fd());
    mount(
        Some(source.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(nix_err("bind the console's pty", target))
}
