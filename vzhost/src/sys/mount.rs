//! The new mount API: detached clones of a tree, idmapped read-only
//! attributes, and attaching a detached tree.
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

use super::{Call, check, cstr, dispatch};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// open_tree(2) of `path` under `dir` with OPEN_TREE_CLONE and `flags`.
fn open_tree(dir: BorrowedFd<'_>, path: &Path, flags: libc::c_uint) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    let fd = dispatch(
        || Call::OpenTree {
            path: path.display().to_string(),
        },
        || {
            // SAFETY: p is a valid NUL-terminated string for the call's duration.
            check(unsafe {
                libc::syscall(
                    libc::SYS_open_tree,
                    dir.as_raw_fd(),
                    p.as_ptr(),
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | flags,
                )
            })
        },
    )?;
    // SAFETY: open_tree returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A detached, recursive clone of the mount tree at `path`.
pub fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    // SAFETY: AT_FDCWD is a valid directory argument for every *at call.
    let cwd = unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) };
    open_tree(cwd, path, libc::AT_RECURSIVE as libc::c_uint)
}

/// A detached clone of the one mount at `root` (no mounts below it), made
/// from inside the mount namespace `mnt_ns` it belongs to (the kernel
/// clones only mounts of the caller's namespace). A thread of its own
/// enters that namespace and is gone afterwards.
pub fn clone_mount_in(mnt_ns: BorrowedFd<'_>, root: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use nix::sched::{CloneFlags, setns, unshare};
    let clone = || -> io::Result<OwnedFd> {
        // setns into a mount namespace needs a filesystem context of the
        // thread's own.
        unshare(CloneFlags::CLONE_FS)?;
        setns(mnt_ns, CloneFlags::CLONE_NEWNS)?;
        open_tree(root, Path::new(""), libc::AT_EMPTY_PATH as libc::c_uint)
    };
    std::thread::scope(|s| s.spawn(clone).join())
        .unwrap_or_else(|_| Err(io::Error::other("the mount namespace thread panicked")))
}

/// Make the detached mount `tree` idmapped through `userns` and read-only.
pub fn idmap_readonly(tree: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    dispatch(
        || Call::MountSetattr {
            attr_set: attr.attr_set,
        },
        || {
            // SAFETY: attr outlives the call and its size is passed; empty is a
            // valid C string; tree is an open mount fd.
            check(unsafe {
                libc::syscall(
                    libc::SYS_mount_setattr,
                    tree.as_raw_fd(),
                    empty.as_ptr(),
                    libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
                    &raw const attr,
                    size_of::<MountAttr>(),
                )
            })
        },
    )?;
    Ok(())
}

/// Attach the detached mount `tree` at `target`.
pub fn move_mount_to(tree: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    let t = cstr(target)?;
    let empty = c"";
    dispatch(
        || Call::MoveMount {
            target: target.display().to_string(),
        },
        || {
            // SAFETY: both strings are valid for the call; tree is a mount fd.
            check(unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    tree.as_raw_fd(),
                    empty.as_ptr(),
                    libc::AT_FDCWD,
                    t.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                )
            })
        },
    )?;
    Ok(())
}
