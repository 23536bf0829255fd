//! The one way host code touches a VPS's files, or a template's.
//!
//! A VPS's root controls every name under its root: a path string followed
//! into its layer can be a symlink to any host file, a FIFO that blocks the
//! reader forever, a directory where a file was expected, or a file hard
//! linked from elsewhere (runc learned this: CVE-2019-5736, CVE-2021-30465,
//! CVE-2024-21626). So host code never follows a path into a VPS's layer or
//! a template. It holds a [`SafeDir`] instead: a directory fd taken once,
//! beneath which the kernel resolves every path with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV)`, so no name can lead out of it, through a symlink or
//! onto another mount. What is opened (`O_NOFOLLOW | O_NONBLOCK | O_NOCTTY`)
//! is checked with `fstat` before it is used: the kind expected (a regular
//! file, a directory), an owner within the VPS's id range, one link. Reads
//! are capped. A write goes to a temp file created `O_EXCL` in the same
//! directory fd, is fchown'd, fchmod'ed and fsync'ed there, then renamed
//! over the target with `renameat` in that directory: a symlink, FIFO or
//! hard link at the target is replaced, never followed. Missing directories
//! are made with `mkdirat`, then owned and moded through their own fd.
//!
//! Work on a running VPS's files runs inside it instead, as its own root,
//! so the kernel's own permission checks apply too (see `vps::passwd`), and
//! it uses this same type on the VPS's `/`. Whole trees (disk accounting,
//! project ids, removal) are walked by [`super::walk`] under the same rules.
use std::{
    cell::Cell,
    io::{self, Read as _, Write as _},
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::OFlag,
    sys::stat::{FileStat, Mode, SFlag, fchmod, fstat},
    unistd::{Gid, Uid, UnlinkatFlags, fchown, fsync, unlinkat},
};

use crate::{model::IdMap, sys};

/// How every path beneath a [`SafeDir`] is resolved.
const RESOLVE: u64 = libc::RESOLVE_IN_ROOT
    | libc::RESOLVE_NO_SYMLINKS
    | libc::RESOLVE_NO_MAGICLINKS
    | libc::RESOLVE_NO_XDEV;
/// How everything beneath a [`SafeDir`] is opened: never through a
/// symlink, never blocking (a FIFO), never becoming a controlling tty.
const OPEN: i32 = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
/// How a path is located before anything is opened for reading.
const LOCATE: i32 = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
/// Names tried for a temp file before a write gives up.
const TEMP_TRIES: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum SafeError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("{path} goes through a symlink; vzhost never follows one in a VPS's files")]
    Symlink { path: String },
    #[error("{path} crosses a mount point; vzhost stays on the filesystem of the layer")]
    Mount { path: String },
    #[error("{path} is {found}, not {expected}; vzhost leaves it alone")]
    Kind {
        path: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error(
        "{path} is owned by host ids {uid}:{gid}, outside the VPS's ids {first}..{end}; vzhost leaves it alone"
    )]
    Owner {
        path: String,
        uid: u32,
        gid: u32,
        first: u32,
        end: u64,
    },
    #[error(
        "{path} has {links} hard links; vzhost reads no file that may be linked from elsewhere"
    )]
    Links { path: String, links: u64 },
    #[error("{path} is larger than {cap} bytes, the most vzhost reads of it")]
    TooBig { path: String, cap: u64 },
    #[error("{path}: {why}")]
    BadPath { path: String, why: &'static str },
}

impl SafeError {
    /// A file the VPS shaped so that vzhost will not touch it is a state
    /// to fix in the VPS (conflict); a missing one is not found.
    pub fn kind(&self) -> crate::model::ErrorKind {
        use crate::model::ErrorKind;
        match self {
            Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Self::Io { .. } => ErrorKind::Internal,
            Self::Symlink { .. }
            | Self::Mount { .. }
            | Self::Kind { .. }
            | Self::Owner { .. }
            | Self::Links { .. }
            | Self::TooBig { .. } => ErrorKind::Conflict,
            Self::BadPath { .. } => ErrorKind::Invalid,
        }
    }
}

pub type Result<T> = std::result::Result<T, SafeError>;

/// Owner and mode of something written or made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

impl Owner {
    /// Owner and mode of an existing file or directory.
    pub fn of(st: &FileStat) -> Self {
        Self {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    File,
    Dir,
}

/// A directory of a VPS's files (its upper layer, a template, or `/` as
/// the VPS's root sees it), held by fd; see the module's documentation.
#[derive(Debug)]
pub struct SafeDir {
    fd: OwnedFd,
    /// Where it is, for messages.
    label: PathBuf,
    /// Host ids everything opened beneath must be owned by; None: any.
    owners: Option<IdMap>,
    /// Seed and count of the temp names this handle tries.
    seed: u64,
    temps: Cell<u32>,
}

impl SafeDir {
    /// Open `path`, a directory the host made (never through a symlink at
    /// its last component), whose contents must be owned within `owners`.
    pub fn open(path: &Path, owners: Option<IdMap>) -> Result<Self> {
        let label = path.display().to_string();
        let handle = nix::fcntl::open(path, OFlag::from_bits_retain(LOCATE), Mode::empty())
            .map_err(|e| classify("open", label.clone(), e.into()))?;
        let mut dir = Self {
            fd: handle,
            label: path.to_owned(),
            owners,
            seed: seed(),
            temps: Cell::new(0),
        };
        dir.check("", dir.fd.as_fd(), Want::Dir, true)?;
        dir.fd = open_dir(dir.fd.as_fd()).map_err(|e| classify("open", label, e))?;
        Ok(dir)
    }

    fn path(&self, rel: &str) -> String {
        if rel.is_empty() || rel == "." {
            self.label.display().to_string()
        } else {
            self.label.join(rel).display().to_string()
        }
    }

    fn at(&self, rel: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        sys::openat2(self.fd.as_fd(), rel, flags | OPEN, mode, RESOLVE)
    }

    /// `rel` resolved beneath, as an `O_PATH` handle: nothing is opened for
    /// reading, so even a device or a FIFO there is harmless.
    fn locate(&self, rel: &str) -> io::Result<OwnedFd> {
        sys::openat2(self.fd.as_fd(), rel, LOCATE, 0, RESOLVE)
    }

    /// `rel` opened for reading once its handle showed it is what is
    /// wanted; None when there is nothing at `rel`.
    fn open_checked(
        &self,
        rel: &str,
        want: Want,
        owned: bool,
    ) -> Result<Option<(OwnedFd, FileStat)>> {
        let handle = match self.locate(rel) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            r => r.map_err(|e| classify("open", self.path(rel), e))?,
        };
        let st = self.check(rel, handle.as_fd(), want, owned)?;
        let fd = match want {
            Want::Dir => open_dir(handle.as_fd()),
            Want::File => self.at(rel, libc::O_RDONLY, 0),
        }
        .map_err(|e| classify("open", self.path(rel), e))?;
        let again = fstat(fd.as_fd()).map_err(|e| SafeError::Io {
            action: "stat",
            path: self.path(rel),
            source: e.into(),
        })?;
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
            return Err(SafeError::Io {
                action: "open",
                path: self.path(rel),
                source: io::Error::other("it was replaced while being opened; try again"),
            });
        }
        Ok(Some((fd, st)))
    }

    /// What `fd` (opened as `rel`) is, if it is what is wanted.
    fn check(&self, rel: &str, fd: BorrowedFd<'_>, want: Want, owned: bool) -> Result<FileStat> {
        let st = fstat(fd).map_err(|e| SafeError::Io {
            action: "stat",
            path: self.path(rel),
            source: e.into(),
        })?;
        let (expected, name) = match want {
            Want::File => (SFlag::S_IFREG, "a regular file"),
            Want::Dir => (SFlag::S_IFDIR, "a directory"),
        };
        if kind(&st) == SFlag::S_IFLNK {
            return Err(SafeError::Symlink {
                path: self.path(rel),
            });
        }
        if kind(&st) != expected {
            return Err(SafeError::Kind {
                path: self.path(rel),
                found: describe(kind(&st)),
                expected: name,
            });
        }
        if let Some(ids) = self.owners.filter(|_| owned) {
            let end = u64::from(ids.base) + u64::from(ids.count);
            let inside = |id: u32| id >= ids.base && u64::from(id) < end;
            if !inside(st.st_uid) || !inside(st.st_gid) {
                return Err(SafeError::Owner {
                    path: self.path(rel),
                    uid: st.st_uid,
                    gid: st.st_gid,
                    first: ids.base,
                    end,
                });
            }
        }
        if want == Want::File && st.st_nlink > 1 {
            return Err(SafeError::Links {
                path: self.path(rel),
                links: st.st_nlink,
            });
        }
        Ok(st)
    }

    /// The contents of regular file `rel`, at most `cap` bytes; None when
    /// there is nothing at `rel`.
    pub fn read(&self, rel: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let Some((fd, st)) = self.open_checked(rel, Want::File, true)? else {
            return Ok(None);
        };
        let too_big = || SafeError::TooBig {
            path: self.path(rel),
            cap,
        };
        if u64::try_from(st.st_size).unwrap_or(u64::MAX) > cap {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(cap.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| SafeError::Io {
                action: "read",
                path: self.path(rel),
                source,
            })?;
        if bytes.len() as u64 > cap {
            return Err(too_big());
        }
        Ok(Some(bytes))
    }

    /// What is at `rel` (whatever it is, owned by anyone), without opening
    /// it for reading; None when there is nothing.
    pub fn lstat(&self, rel: &str) -> Result<Option<FileStat>> {
        match self.locate(rel) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(classify("open", self.path(rel), e)),
            Ok(fd) => fstat(fd.as_fd()).map(Some).map_err(|e| SafeError::Io {
                action: "stat",
                path: self.path(rel),
                source: e.into(),
            }),
        }
    }

    /// Directory `rel` beneath this one, under the same rules.
    pub fn dir(&self, rel: &str) -> Result<SafeDir> {
        match self.open_checked(rel, Want::Dir, true)? {
            Some((fd, _)) => Ok(self.beneath(rel, fd)),
            None => Err(SafeError::Io {
                action: "open",
                path: self.path(rel),
                source: io::Error::from_raw_os_error(libc::ENOENT),
            }),
        }
    }

    fn beneath(&self, rel: &str, fd: OwnedFd) -> SafeDir {
        SafeDir {
            fd,
            label: self.label.join(rel),
            owners: self.owners,
            seed: self.seed,
            temps: Cell::new(0),
        }
    }

    /// Directory `rel`, each missing part of it made with `owner`.
    pub fn make_dir(&self, rel: &str, owner: Owner) -> Result<SafeDir> {
        let mut dir = self.dir(".")?;
        for part in rel.split('/').filter(|p| !p.is_empty() && *p != ".") {
            dir = dir.make_child(part, owner)?;
        }
        Ok(dir)
    }

    fn make_child(&self, name: &str, owner: Owner) -> Result<SafeDir> {
        plain_name(name).map_err(|why| SafeError::BadPath {
            path: self.path(name),
            why,
        })?;
        let made = match nix::sys::stat::mkdirat(
            self.fd.as_fd(),
            name,
            Mode::from_bits_truncate(owner.mode),
        ) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(classify("mkdir", self.path(name), e.into())),
        };
        // What this call made is the host's until it is given away below.
        let (fd, _) = self
            .open_checked(name, Want::Dir, !made)?
            .ok_or_else(|| SafeError::Io {
                action: "open",
                path: self.path(name),
                source: io::Error::from_raw_os_error(libc::ENOENT),
            })?;
        if made {
            let fix = |action, r: nix::Result<()>| {
                r.map_err(|e| SafeError::Io {
                    action,
                    path: self.path(name),
                    source: e.into(),
                })
            };
            let (uid, gid) = (Uid::from_raw(owner.uid), Gid::from_raw(owner.gid));
            fix("chown", fchown(&fd, Some(uid), Some(gid)))?;
            fix("chmod", fchmod(&fd, Mode::from_bits_truncate(owner.mode)))?;
        }
        Ok(self.beneath(name, fd))
    }

    /// Replace file `rel` (its directory must exist) with `bytes`, owned
    /// and moded as `owner` says. Whatever was at `rel` is replaced, never
    /// written through; a directory there is an error.
    pub fn write(&self, rel: &str, bytes: &[u8], owner: Owner) -> Result<()> {
        match rel.rsplit_once('/') {
            Some((parent, name)) => self.dir(parent)?.replace(name, bytes, owner),
            None => self.replace(rel, bytes, owner),
        }
    }

    fn replace(&self, name: &str, bytes: &[u8], owner: Owner) -> Result<()> {
        plain_name(name).map_err(|why| SafeError::BadPath {
            path: self.path(name),
            why,
        })?;
        let (temp, fd) = self.create_temp(name)?;
        let temp_path = self.path(&temp);
        let fail = |action: &'static str| {
            let path = temp_path.clone();
            move |source: io::Error| SafeError::Io {
                action,
                path,
                source,
            }
        };
        let done = (|| {
            let mut file = std::fs::File::from(fd);
            file.write_all(bytes).map_err(fail("write"))?;
            let (uid, gid) = (Uid::from_raw(owner.uid), Gid::from_raw(owner.gid));
            fchown(&file, Some(uid), Some(gid)).map_err(|e| fail("chown")(e.into()))?;
            fchmod(&file, Mode::from_bits_truncate(owner.mode))
                .map_err(|e| fail("chmod")(e.into()))?;
            fsync(&file).map_err(|e| fail("sync")(e.into()))?;
            nix::fcntl::renameat(self.fd.as_fd(), temp.as_str(), self.fd.as_fd(), name)
                .map_err(|e| classify("rename over", self.path(name), e.into()))?;
            fsync(&self.fd).map_err(|e| fail("sync the directory of")(e.into()))
        })();
        if done.is_err() {
            let _ = unlinkat(&self.fd, temp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        done
    }

    /// A new file of this directory's own, readable by no one else yet.
    fn create_temp(&self, name: &str) -> Result<(String, OwnedFd)> {
        for _ in 0..TEMP_TRIES {
            let n = self.temps.get();
            self.temps.set(n + 1);
            let temp = format!(".{name}.vzhost-{:x}-{n}", self.seed);
            // O_EXCL: a name someone else holds (even a symlink) is never
            // opened; another is tried.
            match self.at(&temp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600) {
                Ok(fd) => return Ok((temp, fd)),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                Err(e) => return Err(classify("create", self.path(&temp), e)),
            }
        }
        Err(SafeError::Io {
            action: "create a temp file for",
            path: self.path(name),
            source: io::Error::from_raw_os_error(libc::EEXIST),
        })
    }

    /// Make the next temp names predictable, for tests that plant traps.
    #[cfg(test)]
    fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// The directory a handle points at, opened for reading.
fn open_dir(handle: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::openat(
        handle,
        c".",
        OFlag::from_bits_retain(OPEN) | OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )?)
}

/// A hard-to-guess start for temp names, so a VPS cannot occupy them all.
fn seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn plain_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        Err("not a plain file name")
    } else {
        Ok(())
    }
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn describe(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "of an unknown kind",
    }
}

/// The error for a failed resolution, naming symlinks and mounts plainly.
fn classify(action: &'static str, path: String, source: io::Error) -> SafeError {
    match source.raw_os_error() {
        Some(libc::ELOOP) => SafeError::Symlink { path },
        Some(libc::EXDEV) => SafeError::Mount { path },
        _ => SafeError::Io {
            action,
            path,
            source,
        },
    }
}

/// Whether `st` is an overlayfs whiteout: the mark of a file the VPS
/// deleted from its template.
pub fn is_whiteout(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFCHR && st.st_rdev == 0
}

#[cfg(test)]
#[path = "safe_tests.rs"]
mod tests;
