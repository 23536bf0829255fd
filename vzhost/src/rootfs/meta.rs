//! What a template is: its distribution and release (from its
//! `/etc/os-release`), its init (what `/sbin/init` leads to), a hash of its
//! content, its size and when it was made. Detected once, when the
//! template is installed, and kept beside it as `NAME.meta.json`.
//!
//! The tree may come from anywhere (an import): its files are read with
//! `openat2(RESOLVE_IN_ROOT)` from a descriptor of its root, so a symlink
//! such as Debian's `/etc/os-release -> ../usr/lib/os-release` resolves as
//! it would inside the VPS and none leads out of it.
use std::{
    collections::HashSet,
    fs,
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::sys;

/// The most of `/etc/os-release` read.
const OS_RELEASE_CAP: u64 = 64 * 1024;

/// What runs as PID 1, by what `/sbin/init` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    Systemd,
    Sysvinit,
    Busybox,
    Unknown,
}

impl Init {
    /// By the name of the file `/sbin/init` finally is.
    pub fn of_program(file_name: &str) -> Self {
        match file_name {
            "systemd" => Self::Systemd,
            "busybox" => Self::Busybox,
            "init" => Self::Sysvinit,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Systemd => "systemd",
            Self::Sysvinit => "sysvinit",
            Self::Busybox => "busybox",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateMeta {
    /// os-release's `ID` (`debian`), else `busybox` or `unknown`.
    pub distribution: String,
    /// os-release's `VERSION_ID` (`12`), else its codename, else `unknown`.
    pub release: String,
    /// os-release's `VERSION_CODENAME` (`bookworm`).
    #[serde(default)]
    pub codename: Option<String>,
    pub init: Init,
    /// `sha256:` and the hex digest of the canonical walk ([`content_hash`]).
    pub hash: String,
    /// Bytes allocated, each hard-linked inode once (like `du -sx`).
    pub size: u64,
    /// Seconds since the epoch.
    pub created: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        path: String,
        source: serde_json::Error,
    },
}

pub type Result<T> = std::result::Result<T, MetaError>;

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MetaError {
    let path = path.display().to_string();
    move |source| MetaError::Io {
        action,
        path,
        source,
    }
}

/// The fields of an os-release file vzhost shows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: Option<String>,
    pub version_id: Option<String>,
    pub codename: Option<String>,
}

/// Parse os-release(5): `KEY=value` lines, values maybe quoted.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        if value.is_empty() {
            continue;
        }
        let slot = match key {
            "ID" => &mut os.id,
            "VERSION_ID" => &mut os.version_id,
            "VERSION_CODENAME" => &mut os.codename,
            _ => continue,
        };
        *slot = Some(value.to_owned());
    }
    os
}

/// Resolve `rel` in the tree `root` as its own `/` would.
fn open_in(root: &OwnedFd, rel: &str, flags: i32) -> std::io::Result<OwnedFd> {
    // openat2 refuses O_PATH with any other flag.
    let quiet = if flags & libc::O_PATH == 0 {
        libc::O_NONBLOCK | libc::O_NOCTTY
    } else {
        0
    };
    sys::openat2(
        std::os::fd::AsFd::as_fd(root),
        rel,
        flags | quiet,
        0,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV,
    )
}

/// The tree's os-release, if it has a regular one.
fn os_release(root: &OwnedFd) -> OsRelease {
    let read = |rel| -> Option<String> {
        let f = fs::File::from(open_in(root, rel, libc::O_RDONLY).ok()?);
        if !f.metadata().ok()?.is_file() {
            return None;
        }
        let mut text = String::new();
        f.take(OS_RELEASE_CAP).read_to_string(&mut text).ok()?;
        Some(text)
    };
    read("etc/os-release")
        .or_else(|| read("usr/lib/os-release"))
        .map(|t| parse_os_release(&t))
        .unwrap_or_default()
}

/// What `/sbin/init` finally is, by the name of the file it leads to.
fn init(root: &OwnedFd) -> Init {
    let Ok(fd) = open_in(root, "sbin/init", libc::O_PATH) else {
        return Init::Unknown;
    };
    // The kernel's own name for what was opened: the end of every symlink.
    fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .and_then(|p| {
            p.file_name()
                .map(|n| Init::of_program(&n.to_string_lossy()))
        })
        .unwrap_or(Init::Unknown)
}

/// The content hash and size of the tree at `root`.
///
/// The hash is SHA-256 over one record per entry, in a canonical order
/// (depth first, names sorted bytewise): its path, type, mode, owner,
/// group, and then a symlink's target, a device's number, or a regular
/// file's own SHA-256. Times and extended attributes are left out, so two
/// copies of one tree hash alike. Nothing is followed and nothing on
/// another filesystem is entered.
pub fn content_hash(root: &Path) -> Result<(String, u64)> {
    let top = fs::symlink_metadata(root).map_err(io("stat", root))?;
    let mut hash = Sha256::new();
    let mut size = top.blocks() * 512;
    let mut linked = HashSet::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let dir = root.join(&rel);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(io("read", &dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(io("read", &dir))?;
        entries.sort();
        let mut subdirs = Vec::new();
        for name in entries {
            let rel = rel.join(&name);
            let path = root.join(&rel);
            let m = fs::symlink_metadata(&path).map_err(io("stat", &path))?;
            if m.dev() != top.dev() {
                continue;
            }
            if m.is_dir() || m.nlink() <= 1 || linked.insert(m.ino()) {
                size += m.blocks() * 512;
            }
            let t = m.file_type();
            let (kind, extra) = if t.is_dir() {
                subdirs.push(rel.clone());
                ('d', String::new())
            } else if t.is_symlink() {
                let target = fs::read_link(&path).map_err(io("read link", &path))?;
                ('l', target.display().to_string())
            } else if t.is_file() {
                ('f', file_hash(&path, m.ino())?)
            } else if t.is_char_device() || t.is_block_device() {
                (
                    if t.is_char_device() { 'c' } else { 'b' },
                    m.rdev().to_string(),
                )
            } else {
                ('p', String::new())
            };
            hash.update(format!(
                "{}\0{kind}\0{:o}\0{}\0{}\0{extra}\n",
                rel.display(),
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            ));
        }
        dirs.extend(subdirs.into_iter().rev());
    }
    Ok((format!("sha256:{:x}", hash.finalize()), size))
}

/// The SHA-256 of regular file `path`, which must still be inode `ino`.
fn file_hash(path: &Path, ino: u64) -> Result<String> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io("open", path))?;
    if f.metadata().map_err(io("stat", path))?.ino() != ino {
        return Err(io("open", path)(std::io::Error::other(
            "it was replaced while the template was hashed",
        )));
    }
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io("read", path))?;
    Ok(format!("{:x}", h.finalize()))
}

/// Everything about the root directory `root`, made `created`.
pub fn detect(root: &Path, created: u64) -> Result<TemplateMeta> {
    let fd: OwnedFd = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(root)
        .map_err(io("open", root))?
        .into();
    let os = os_release(&fd);
    let init = init(&fd);
    let (hash, size) = content_hash(root)?;
    let fallback = if init == Init::Busybox {
        "busybox"
    } else {
        "unknown"
    };
    Ok(TemplateMeta {
        distribution: os.id.unwrap_or_else(|| fallback.to_owned()),
        release: os
            .version_id
            .or_else(|| os.codename.clone())
            .unwrap_or_else(|| "unknown".to_owned()),
        codename: os.codename,
        init,
        hash,
        size,
        created,
    })
}

/// Keep `meta` at `path` (root's alone, 0600), whole or not at all.
pub fn save(path: &Path, meta: &TemplateMeta) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    let json = serde_json::to_vec_pretty(meta).expect("metadata serializes");
    f.write_all(&json).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename", path))
}

/// The metadata kept at `path`, if any.
pub fn load(path: &Path) -> Result<Option<TemplateMeta>> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", path)(e)),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| MetaError::Corrupt {
            path: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
#[path = "meta_tests.rs"]
mod tests;
