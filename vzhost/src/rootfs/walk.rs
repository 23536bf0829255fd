//! Walking a tree a VPS controls (its layer: disk accounting, project ids,
//! removal) under the rules of [`super::safe`]: nothing is followed (every
//! entry is looked at with `fstatat(AT_SYMLINK_NOFOLLOW)`, only directories
//! are opened, `O_NOFOLLOW | O_DIRECTORY` and checked to be the inode that
//! was listed), nothing on another filesystem is entered, and no entry is
//! opened to be looked at, so a FIFO or a socket is harmless.
//!
//! The walk is iterative, so no depth overflows the stack, and holds at
//! most [`MAX_OPEN`] directory descriptors whatever the depth: when it goes
//! deeper, the shallowest descriptors are closed, and a directory is opened
//! again through its child's `..` (checked to be the same inode) when the
//! walk comes back up to it.
use std::{
    collections::HashSet,
    ffi::{CStr, CString},
    io,
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    path::Path,
};

use nix::{
    errno::Errno,
    fcntl::{AtFlags, OFlag, openat},
    sys::stat::{FileStat, Mode, SFlag, fstat, fstatat},
    unistd::{UnlinkatFlags, unlinkat},
};

/// Directory descriptors a walk holds open at most.
pub const MAX_OPEN: usize = 16;

/// How the walk opens a directory.
pub const OPEN_DIR: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

/// What a walk does with what it finds.
pub trait Visit {
    /// Entry `name` of directory `dir`, with what `fstatat` says of it.
    /// Returns whether to walk into it (looked at for directories only).
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &CStr, st: &FileStat) -> io::Result<bool>;

    /// Directory `name` of `dir` has been walked through.
    fn left(&mut self, _dir: BorrowedFd<'_>, _name: &CStr) -> io::Result<()> {
        Ok(())
    }
}

/// How a walk went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    /// The most directory descriptors it held at once.
    pub max_open: usize,
}

/// A directory on the way down.
struct Frame {
    /// Closed while the walk is deep below it.
    fd: Option<OwnedFd>,
    /// (st_dev, st_ino), to know it again.
    id: (u64, u64),
    /// Its name in its parent.
    name: CString,
    /// Its subdirectories still to walk, with their ids.
    todo: Vec<(CString, (u64, u64))>,
}

pub fn is_dir(st: &FileStat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits()
}

pub fn is_file(st: &FileStat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()
}

fn id(st: &FileStat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

/// Walk everything beneath directory `root` (not `root` itself).
pub fn walk(root: BorrowedFd<'_>, visit: &mut impl Visit) -> io::Result<Walked> {
    let fd = openat(root, c".", OPEN_DIR, Mode::empty())?;
    let root_id = id(&fstat(&fd)?);
    let mut frames = vec![Frame {
        todo: list(fd.as_fd(), root_id.0, visit)?,
        fd: Some(fd),
        id: root_id,
        name: c".".to_owned(),
    }];
    let (mut open, mut max_open) = (1, 1);
    while let Some(top) = frames.last_mut() {
        if let Some((name, want)) = top.todo.pop() {
            let parent = top.fd.as_ref().expect("the deepest directory is open");
            let fd = match openat(parent, name.as_c_str(), OPEN_DIR, Mode::empty()) {
                Ok(fd) => fd,
                // Gone or replaced since it was listed: nothing to walk.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                Err(e) => return Err(e.into()),
            };
            if id(&fstat(&fd)?) != want {
                continue;
            }
            let todo = list(fd.as_fd(), root_id.0, visit)?;
            frames.push(Frame {
                fd: Some(fd),
                id: want,
                name,
                todo,
            });
            open += 1;
            if open > MAX_OPEN
                && let Some(shallow) = frames.iter_mut().skip(1).find(|f| f.fd.is_some())
            {
                shallow.fd = None;
                open -= 1;
            }
            max_open = max_open.max(open);
        } else {
            let done = frames.pop().expect("a frame");
            let Some(parent) = frames.last_mut() else {
                break;
            };
            let child = done.fd.expect("the deepest directory is open");
            if parent.fd.is_none() {
                parent.fd = Some(reopen_parent(child.as_fd(), parent.id)?);
                open += 1;
            }
            let parent_fd = parent.fd.as_ref().expect("reopened");
            visit.left(parent_fd.as_fd(), &done.name)?;
            drop(child);
            open -= 1;
        }
    }
    Ok(Walked { max_open })
}

/// The parent of `child`, which must be the directory `want`.
fn reopen_parent(child: BorrowedFd<'_>, want: (u64, u64)) -> io::Result<OwnedFd> {
    let fd = openat(child, c"..", OPEN_DIR, Mode::empty())?;
    if id(&fstat(&fd)?) == want {
        Ok(fd)
    } else {
        Err(io::Error::other(
            "a directory was moved while the tree was walked; try again",
        ))
    }
}

/// Show every entry of `dir` to `visit`; returns the subdirectories to
/// walk into (on device `dev` only).
fn list(
    dir: BorrowedFd<'_>,
    dev: u64,
    visit: &mut impl Visit,
) -> io::Result<Vec<(CString, (u64, u64))>> {
    let names: Vec<CString> = {
        let mut listing = nix::dir::Dir::from_fd(nix::unistd::dup(dir)?)?;
        listing
            .iter()
            .map(|e| e.map(|e| e.file_name().to_owned()))
            .filter(|n| !matches!(n, Ok(n) if n.as_bytes() == b"." || n.as_bytes() == b".."))
            .collect::<nix::Result<_>>()?
    };
    let mut todo = Vec::new();
    for name in names {
        let st = match fstatat(dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        // Another filesystem mounted here is not the tree's.
        if st.st_dev != dev {
            continue;
        }
        if visit.entry(dir, &name, &st)? && is_dir(&st) {
            todo.push((name, id(&st)));
        }
    }
    Ok(todo)
}

/// Allocated bytes of everything beneath `dir` and of `dir` itself, each
/// hard-linked inode once (like `du -sx`).
pub fn tree_bytes(dir: BorrowedFd<'_>) -> io::Result<u64> {
    struct Du {
        bytes: u64,
        linked: HashSet<u64>,
    }
    impl Visit for Du {
        fn entry(&mut self, _: BorrowedFd<'_>, _: &CStr, st: &FileStat) -> io::Result<bool> {
            if is_dir(st) || st.st_nlink <= 1 || self.linked.insert(st.st_ino) {
                self.bytes += block_bytes(st);
            }
            Ok(true)
        }
    }
    let mut du = Du {
        bytes: block_bytes(&fstat(dir)?),
        linked: HashSet::new(),
    };
    walk(dir, &mut du)?;
    Ok(du.bytes)
}

fn block_bytes(st: &FileStat) -> u64 {
    u64::try_from(st.st_blocks).unwrap_or(0) * 512
}

/// Remove directory `path` and everything in it, never following a
/// symlink and never going onto another filesystem (a mount inside makes
/// the removal fail). Nothing at `path` is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    struct Remove;
    impl Visit for Remove {
        fn entry(&mut self, dir: BorrowedFd<'_>, name: &CStr, st: &FileStat) -> io::Result<bool> {
            if !is_dir(st) {
                unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
            }
            Ok(true)
        }
        fn left(&mut self, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
            Ok(unlinkat(dir, name, UnlinkatFlags::RemoveDir)?)
        }
    }
    let fd = match nix::fcntl::open(path, OPEN_DIR, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    walk(fd.as_fd(), &mut Remove)?;
    drop(fd);
    std::fs::remove_dir(path)
}

#[cfg(test)]
#[path = "walk_tests.rs"]
mod tests;
