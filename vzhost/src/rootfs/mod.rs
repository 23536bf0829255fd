//! Root filesystems: templates (the shared read-only lower layer) and the
//! mounts that build a VPS's root from a template and its own upper layer.
pub mod disk;
pub mod distro;
pub mod meta;
pub mod mounts;
pub mod prep;
pub mod safe;
mod usage;
pub mod walk;

use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

use crate::model::TemplateName;
use distro::{DistroBuild, DistroError};
use meta::{MetaError, TemplateMeta};
use prep::PrepError;

pub const BUILTIN_BUSYBOX: &str = "busybox";
const HOST_BUSYBOX: &str = "/bin/busybox";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown template {0:?}; see `vzhost template list`, or import one with `vzhost template import NAME PATH`"
    )]
    Unknown(String),
    #[error("invalid template name {0:?}: use a-z, 0-9 and '-'")]
    BadName(String),
    #[error("template {0} already exists")]
    Exists(String),
    #[error("cannot build the busybox template: {0} (install busybox-static)")]
    NoBusybox(String),
    #[error("template source {path}: {why}")]
    Source { path: String, why: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Distro(#[from] DistroError),
    #[error("prepare {name} for VPS use: {source}")]
    Prep { name: String, source: PrepError },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl TemplateError {
    pub fn kind(&self) -> crate::model::ErrorKind {
        use crate::model::ErrorKind;
        match self {
            Self::Unknown(_) => ErrorKind::NotFound,
            Self::BadName(_) | Self::Source { .. } => ErrorKind::Invalid,
            Self::Exists(_) => ErrorKind::Conflict,
            Self::NoBusybox(_) | Self::Io { .. } | Self::Meta(_) => ErrorKind::Internal,
            Self::Distro(e) => e.kind(),
            Self::Prep { source, .. } => source.kind(),
        }
    }
}

pub type Result<T> = std::result::Result<T, TemplateError>;

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TemplateError {
    let path = path.display().to_string();
    move |source| TemplateError::Io {
        action,
        path,
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateInfo {
    pub name: String,
    pub path: PathBuf,
    pub builtin: bool,
    /// None for the built-in template before its first use, and for
    /// templates installed before vzhost kept metadata.
    #[serde(default)]
    pub meta: Option<TemplateMeta>,
}

/// Tells apart the staging directories of builds running side by side.
static STAGING: AtomicU64 = AtomicU64::new(0);
/// Where debootstrap mounts kernel filesystems in the tree it builds; a
/// failed build may leave them there.
const BUILD_MOUNTS: &[&str] = &["proc", "sys", "dev/pts", "dev/shm", "dev"];

/// The template directory of a vzhost root.
pub struct Templates {
    dir: PathBuf,
}

impl Templates {
    pub fn new(root: &Path) -> Self {
        Self {
            dir: root.join("templates"),
        }
    }

    /// Where the templates are.
    pub fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Where template `name`'s metadata is kept, beside it.
    fn meta_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.meta.json"))
    }

    /// What `vzhost template list` shows of template `name`.
    pub fn info(&self, name: &TemplateName) -> TemplateInfo {
        let meta = meta::load(&self.meta_path(name.as_str())).unwrap_or_else(|err| {
            tracing::warn!(template = %name, %err, "unreadable template metadata");
            None
        });
        TemplateInfo {
            name: name.to_string(),
            path: self.dir.join(name.as_str()),
            builtin: name.as_str() == BUILTIN_BUSYBOX,
            meta,
        }
    }

    /// Remove staging directories a crash left behind (never into a
    /// filesystem still mounted there).
    pub fn sweep_staging(&self) {
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(".new-") {
                tracing::warn!(path = %e.path().display(), "removing an incomplete template left by a crash");
                let _ = discard_build(&e.path());
            }
        }
    }

    /// The path of template `name`, creating the built-in busybox template
    /// on first use.
    pub fn resolve(&self, name: &TemplateName) -> Result<PathBuf> {
        let path = self.dir.join(name.as_str());
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return Ok(path);
        }
        if name.as_str() == BUILTIN_BUSYBOX {
            // Creates run side by side, and each may build it: the first to
            // rename its build into place wins, the others use that one.
            match self.install(name, build_busybox) {
                Err(_) if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) => {}
                done => done?,
            }
            return Ok(path);
        }
        Err(TemplateError::Unknown(name.to_string()))
    }

    pub fn list(&self) -> Vec<TemplateInfo> {
        let mut out: Vec<TemplateInfo> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let name = TemplateName::new(&e.file_name().to_string_lossy()).ok()?;
                Some(self.info(&name))
            })
            .collect();
        if !out.iter().any(|t| t.name == BUILTIN_BUSYBOX) {
            out.push(TemplateInfo {
                name: BUILTIN_BUSYBOX.into(),
                path: self.dir.join(BUILTIN_BUSYBOX),
                builtin: true,
                meta: None,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A name for a new template: valid, and not taken.
    fn new_name(&self, name: &str) -> Result<TemplateName> {
        let name = TemplateName::new(name).map_err(|_| TemplateError::BadName(name.to_owned()))?;
        if self.dir.join(name.as_str()).exists() || name.as_str() == BUILTIN_BUSYBOX {
            return Err(TemplateError::Exists(name.into()));
        }
        Ok(name)
    }

    /// Import a template from a directory or a tarball, keeping owners,
    /// modes (setuid included), device nodes, hard links and extended
    /// attributes as they are there; what cannot be kept (xattrs on a
    /// filesystem without them) fails the import, naming the file.
    pub fn import(&self, name: &str, source: &Path) -> Result<TemplateInfo> {
        let name = self.new_name(name)?;
        let meta = fs::metadata(source).map_err(|e| TemplateError::Source {
            path: source.display().to_string(),
            why: e.to_string(),
        })?;
        self.install(&name, |dest| {
            let mut cmd = if meta.is_dir() {
                // Not `-a`: it ignores xattrs it could not copy.
                let mut c = Command::new("cp");
                c.args([
                    "-dR",
                    "--preserve=mode,ownership,timestamps,links,xattr",
                    "--no-target-directory",
                ])
                .arg(source.join("."))
                .arg(dest);
                c
            } else {
                let mut c = Command::new("tar");
                c.args([
                    "--numeric-owner",
                    "--same-owner",
                    "--xattrs",
                    "--xattrs-include=*",
                    "-xpf",
                ])
                .arg(source)
                .arg("-C")
                .arg(dest);
                c
            };
            let out = cmd.output().map_err(io("run cp/tar for", source))?;
            if !out.status.success() {
                return Err(TemplateError::Source {
                    path: source.display().to_string(),
                    why: format!(
                        "{}; a template keeps owners, modes, device nodes and xattrs, \
                         so the templates directory {} must be on a filesystem that holds them",
                        String::from_utf8_lossy(&out.stderr).trim(),
                        self.dir.display()
                    ),
                });
            }
            if !dest.join("bin/sh").exists() && !dest.join("sbin/init").exists() {
                return Err(TemplateError::Source {
                    path: source.display().to_string(),
                    why: "has neither /bin/sh nor /sbin/init; not a root filesystem".into(),
                });
            }
            Ok(())
        })?;
        Ok(self.info(&name))
    }

    /// Build template `name` from a distribution's archive and prepare it
    /// for VPS use; `progress` hears each stage. A failure leaves nothing.
    pub fn create(
        &self,
        name: &str,
        build: &DistroBuild,
        progress: &mut dyn FnMut(&str),
    ) -> Result<TemplateInfo> {
        build.check()?;
        let name = self.new_name(name)?;
        self.install(&name, |dest| build_tree(build, dest, progress))?;
        Ok(self.info(&name))
    }

    /// Build a template in a staging directory, note what it is, and
    /// rename it into place. The templates directory is root's alone:
    /// what a template holds (setuid binaries, device nodes) is reachable
    /// by no other host user.
    fn install(&self, name: &TemplateName, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        private_dir(&self.dir).map_err(io("create", &self.dir))?;
        let staging = self.dir.join(format!(
            ".new-{name}-{}-{}",
            std::process::id(),
            STAGING.fetch_add(1, Ordering::Relaxed)
        ));
        walk::remove_tree(&staging).map_err(io("remove", &staging))?;
        fs::create_dir(&staging).map_err(io("create", &staging))?;
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))
            .map_err(io("chmod", &staging))?;
        let result = build(&staging).and_then(|()| {
            let meta = meta::detect(&staging, unix_now())?;
            let dest = self.dir.join(name.as_str());
            fs::rename(&staging, &dest).map_err(io("rename", &dest))?;
            Ok(meta::save(&self.meta_path(name.as_str()), &meta)?)
        });
        if result.is_err() {
            let _ = discard_build(&staging);
        }
        result
    }
}

/// Build `build` into directory `dest` (existing, empty) and prepare it
/// for VPS use; `progress` hears each stage.
pub fn build_tree(build: &DistroBuild, dest: &Path, progress: &mut dyn FnMut(&str)) -> Result<()> {
    build.build(dest, progress)?;
    progress("I: Preparing the tree for VPS use");
    prep::prepare(dest).map_err(|source| TemplateError::Prep {
        name: dest.display().to_string(),
        source,
    })
}

/// Throw away a tree whose build failed: what debootstrap left mounted in
/// it is detached first, so nothing outside it is removed.
pub fn discard_build(tree: &Path) -> std::io::Result<()> {
    unmount_build(tree);
    walk::remove_tree(tree)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Detach what a failed debootstrap may have left mounted in `tree`, so
/// its removal does not stop at a mount point. Never through a symlink.
fn unmount_build(tree: &Path) {
    use nix::mount::{MntFlags, umount2};
    for rel in BUILD_MOUNTS {
        let _ = umount2(
            &tree.join(rel),
            MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW,
        );
    }
}

/// Make `dir` (and any missing parent) a directory only its owner, root,
/// can enter; an existing one is set so. A symlink there is refused.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a directory",
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir_all(dir)?,
        Err(e) => return Err(e),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

const INITTAB: &str = "\
# vzhost busybox template: init runs these; services go in as ::respawn: lines.
::sysinit:/bin/mkdir -p /var/log /var/run /tmp
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
";

const FILES: &[(&str, u32, &str)] = &[
    (
        "etc/passwd",
        0o644,
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    (
        "etc/group",
        0o644,
        "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
    ),
    (
        "etc/shadow",
        0o600,
        "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
    ),
    ("etc/inittab", 0o644, INITTAB),
    ("etc/hostname", 0o644, "localhost\n"),
    ("etc/hosts", 0o644, "127.0.0.1 localhost\n::1 localhost\n"),
    (
        "etc/profile",
        0o644,
        "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\\h:\\w\\$ '\n",
    ),
    ("etc/shells", 0o644, "/bin/sh\n"),
];

/// The built-in template: the host's static busybox with every applet
/// linked, and the few files a small server needs.
fn build_busybox(dest: &Path) -> Result<()> {
    if !Path::new(HOST_BUSYBOX).exists() {
        return Err(TemplateError::NoBusybox(format!(
            "{HOST_BUSYBOX} not found"
        )));
    }
    let applets = Command::new(HOST_BUSYBOX)
        .arg("--list-full")
        .output()
        .map_err(|e| TemplateError::NoBusybox(e.to_string()))?;
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "root", "home",
        "var/log", "var/run", "mnt",
    ] {
        fs::create_dir_all(dest.join(d)).map_err(io("create", &dest.join(d)))?;
    }
    for (d, mode) in [("tmp", 0o1777), ("root", 0o700)] {
        let p = dest.join(d);
        fs::create_dir_all(&p).map_err(io("create", &p))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(io("chmod", &p))?;
    }
    let bb = dest.join("bin/busybox");
    fs::copy(HOST_BUSYBOX, &bb).map_err(io("copy busybox to", &bb))?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let link = dest.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        symlink("/bin/busybox", &link).map_err(io("symlink", &link))?;
    }
    for (path, mode, text) in FILES {
        let p = dest.join(path);
        fs::write(&p, text).map_err(io("write", &p))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).map_err(io("chmod", &p))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
