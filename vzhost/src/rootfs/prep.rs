//! Making a distribution's root directory fit to be the template of many
//! VPSs: no identity of the host that built it or shared by every VPS
//! (machine-id, SSH host keys, hostname, resolver), nothing that configures
//! eth0 behind vzhost's back, units that cannot work in a VPS masked, and
//! what only an installer needs (apt lists and caches, docs) dropped.
//!
//! The tree is the host's own, just built, not a running VPS's: plain
//! `std::fs` does, but no path is ever followed through a symlink in it
//! (Debian's `/lib` and `/sbin` are symlinks, which a careless join would
//! take out of the tree on another layout).
use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _, symlink},
    path::{Component, Path, PathBuf},
};

use super::walk::remove_tree;

/// Bump when what [`prepare`] does changes: cached images built by an
/// older one are then built again.
pub const VERSION: u32 = 1;

/// Units that cannot work in a VPS: kernel filesystems its user namespace
/// may not mount, hardware (udev, consoles on virtual terminals), the
/// audit socket, and the first-boot wizard, which would wait for answers
/// on the console. `console-getty.service` stays: it is the VPS's console.
pub const MASKED: &[&str] = &[
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount",
    "getty@.service",
    "serial-getty@.service",
    "systemd-udevd.service",
    "systemd-udevd-control.socket",
    "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service",
    "systemd-udev-settle.service",
    "systemd-journald-audit.socket",
    "systemd-firstboot.service",
];

/// Files written, with their modes.
const FILES: &[(&str, u32, &str)] = &[
    // Present and empty: systemd takes it as a first boot and the VPS gets
    // an id of its own.
    ("etc/machine-id", 0o444, ""),
    ("etc/hostname", 0o644, "localhost\n"),
    (
        "etc/hosts",
        0o644,
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n",
    ),
    (
        "etc/resolv.conf",
        0o644,
        "# vzhost: no resolver configured; add nameserver lines here.\n",
    ),
    (
        "etc/network/interfaces",
        0o644,
        "# vzhost configures eth0 from the host; only the loopback is set here.\n\
         auto lo\niface lo inet loopback\n",
    ),
    // The provider sets root's password with `vzhost passwd`, as hosting
    // templates do; the first value sshd reads wins, and drop-ins come first.
    (
        "etc/ssh/sshd_config.d/vzhost.conf",
        0o644,
        "# vzhost: root logs in with the password `vzhost passwd` sets.\nPermitRootLogin yes\n",
    ),
    // Each VPS makes its own host keys before sshd starts; Debian's unit
    // runs `sshd -t` first, which fails without keys, so the list is reset.
    (
        "etc/systemd/system/ssh.service.d/vzhost-host-keys.conf",
        0o644,
        "# vzhost: each VPS makes its own SSH host keys on its first start.\n\
         [Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n",
    ),
    // First boot enables nothing beyond what the template enables (Debian
    // has no default preset, so every unit would be, ssh.socket included,
    // which clashes with ssh.service).
    (
        "etc/systemd/system-preset/00-vzhost.preset",
        0o644,
        "# vzhost: units stay enabled as the template has them.\ndisable *\n",
    ),
];

/// Directories emptied (package lists and caches, manuals, message
/// translations), with what stays in each: apt wants its `partial/` and
/// `lock` there, glibc its `locale.alias`.
const EMPTIED: &[(&str, &[&str])] = &[
    ("var/lib/apt/lists", &["partial", "lock"]),
    ("var/cache/apt", &["archives"]),
    ("var/cache/apt/archives", &["partial", "lock"]),
    ("usr/share/man", &[]),
    ("usr/share/info", &[]),
    ("usr/share/locale", &["locale.alias"]),
];

/// Files of the build removed: its logs and seeds.
const REMOVED: &[&str] = &[
    "var/lib/systemd/random-seed",
    "var/log/bootstrap.log",
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/apt/eipp.log.xz",
];

#[derive(Debug, thiserror::Error)]
pub enum PrepError {
    #[error(
        "{path} goes through a symlink at {at}; vzhost prepares a tree only through its own directories"
    )]
    Symlink { path: String, at: String },
    #[error("{0} is not a root filesystem (no /etc directory)")]
    NotRoot(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl PrepError {
    pub fn kind(&self) -> crate::model::ErrorKind {
        use crate::model::ErrorKind;
        match self {
            Self::Symlink { .. } | Self::NotRoot(_) => ErrorKind::Invalid,
            Self::Io { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T> = std::result::Result<T, PrepError>;

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PrepError {
    let path = path.display().to_string();
    move |source| PrepError::Io {
        action,
        path,
        source,
    }
}

/// `root/rel`, once every directory on the way is known to be a real
/// directory or absent (never a symlink); the last component may be
/// anything, and is never followed by the callers.
fn inside(root: &Path, rel: &str) -> Result<PathBuf> {
    let rel = Path::new(rel);
    let mut at = root.to_owned();
    let parts: Vec<Component<'_>> = rel.components().collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        let Component::Normal(name) = part else {
            unreachable!("only plain relative paths are prepared: {rel:?}")
        };
        at.push(name);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(PrepError::Symlink {
                    path: root.join(rel).display().to_string(),
                    at: at.display().to_string(),
                });
            }
            _ => {}
        }
    }
    Ok(root.join(rel))
}

/// Make the directories of `rel`'s parent, none through a symlink.
fn make_parent(root: &Path, rel: &str) -> Result<PathBuf> {
    let path = inside(root, rel)?;
    let parent = path.parent().expect("a path beneath root");
    fs::create_dir_all(parent).map_err(io("create", parent))?;
    Ok(path)
}

/// Remove whatever is at `path` without following it; a directory with
/// all it holds.
fn remove(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => remove_tree(path).map_err(io("remove", path)),
        Ok(_) => fs::remove_file(path).map_err(io("remove", path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("look at", path)(e)),
    }
}

/// Replace `rel` with a new file holding `text`.
fn put(root: &Path, rel: &str, mode: u32, text: &str) -> Result<()> {
    let path = make_parent(root, rel)?;
    remove(&path)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io("create", &path))?;
    f.write_all(text.as_bytes()).map_err(io("write", &path))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io("chmod", &path))
}

/// Empty directory `rel` (if it is there), keeping the entries `keep`
/// names.
fn empty_dir(root: &Path, rel: &str, keep: impl Fn(&str) -> bool) -> Result<()> {
    let dir = inside(root, rel)?;
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        _ => return Ok(()),
    }
    for e in fs::read_dir(&dir).map_err(io("read", &dir))? {
        let e = e.map_err(io("read", &dir))?;
        if !keep(&e.file_name().to_string_lossy()) {
            remove(&e.path())?;
        }
    }
    Ok(())
}

/// Mask `unit`: a symlink to /dev/null in /etc/systemd/system.
fn mask(root: &Path, unit: &str) -> Result<()> {
    let path = make_parent(root, &format!("etc/systemd/system/{unit}"))?;
    remove(&path)?;
    symlink("/dev/null", &path).map_err(io("mask", &path))
}

/// Prepare the root directory `root` for use as a VPS template.
pub fn prepare(root: &Path) -> Result<()> {
    if !fs::symlink_metadata(root.join("etc")).is_ok_and(|m| m.is_dir()) {
        return Err(PrepError::NotRoot(root.display().to_string()));
    }
    // No VPS may share another's SSH host keys.
    empty_dir(root, "etc/ssh", |name| !name.starts_with("ssh_host_"))?;
    for (rel, mode, text) in FILES {
        put(root, rel, *mode, text)?;
    }
    for unit in MASKED {
        mask(root, unit)?;
    }
    for (rel, kept) in EMPTIED {
        empty_dir(root, rel, |name| kept.contains(&name))?;
    }
    for rel in REMOVED {
        remove(&inside(root, rel)?)?;
    }
    // The docs go, but each package's copyright stays.
    let doc = inside(root, "usr/share/doc")?;
    if !fs::symlink_metadata(&doc).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    for e in fs::read_dir(&doc).map_err(io("read", &doc))?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let rel = format!("usr/share/doc/{}", e.file_name().to_string_lossy());
            empty_dir(root, &rel, |name| name == "copyright")?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "prep_tests.rs"]
mod tests;
