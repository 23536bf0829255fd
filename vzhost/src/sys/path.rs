//! openat2: resolving a path beneath a directory fd with the kernel's own
//! scoping (RESOLVE_IN_ROOT and friends), so a symlink a VPS planted cannot
//! lead host code out of the VPS.
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use super::{Call, check, dispatch};

/// `struct open_how` (libc's is non_exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// openat2(2) of `path` relative to `dir` with `flags` (O_CLOEXEC is always
/// added), `mode` for a created file, and the `resolve` restrictions.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let c_path =
        std::ffi::CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve,
    };
    let fd = dispatch(
        || Call::Openat2 {
            path: path.to_owned(),
            resolve,
        },
        || {
            // SAFETY: openat2 reads the path and the open_how of the given
            // size, both alive for the call.
            check(unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    dir.as_raw_fd(),
                    c_path.as_ptr(),
                    &raw const how,
                    size_of::<OpenHow>(),
                )
            })
        },
    )?;
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `stat` of `path` inside the directory `root`, resolved as if `root`
/// were `/` (openat2 with RESOLVE_IN_ROOT): a symlink in the VPS pointing
/// to an absolute path, or `..`, stays in the VPS. Returns (st_dev, st_ino).
pub fn stat_in(root: BorrowedFd<'_>, path: &str) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let fd = openat2(
        root,
        path.trim_start_matches('/'),
        libc::O_PATH,
        0,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )?;
    let meta = std::fs::File::from(fd).metadata()?;
    Ok((meta.dev(), meta.ino()))
}
