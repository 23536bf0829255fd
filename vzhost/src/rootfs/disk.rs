//! Disk space limits for a VPS's own layer, like OpenVZ's DISKSPACE: a
//! project quota on its directory where the state filesystem has project
//! quotas (XFS `pquota`, ext4 `prjquota`), otherwise an ext4 image of its
//! own, loop-mounted in place (like OpenVZ's ploop). Either way the VPS's
//! upper and work directories live under `<vps>/disk`, so nothing else has
//! to know which one is in use.
use std::{
    ffi::CStr,
    fs, io,
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
};

use nix::{
    errno::Errno,
    fcntl::{OFlag, openat},
    sys::stat::{FileStat, Mode, fstat},
};

use super::{
    usage,
    walk::{self, Visit},
};
use crate::sys;

#[derive(Debug, thiserror::Error)]
#[error("disk limit on {path}: {what}: {why}")]
pub struct DiskError {
    path: String,
    what: &'static str,
    why: String,
}

pub type Result<T> = std::result::Result<T, DiskError>;

fn err(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> DiskError {
    let path = path.display().to_string();
    move |e| DiskError {
        path,
        what,
        why: e.to_string(),
    }
}

pub use crate::model::DiskBackend;

fn open_dir(dir: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(dir, walk::OPEN_DIR, Mode::empty()).map_err(|e| err(dir, "open")(e.into()))
}

/// Whether the filesystem holding `dir` enforces project quotas.
pub fn has_project_quota(dir: &Path) -> bool {
    open_dir(dir).is_ok_and(|fd| sys::project_quota_on(fd.as_fd()))
}

/// Put `dir` and everything under it into `project`, new files included.
/// Only directories and regular files are opened for it (they hold the
/// blocks): a FIFO, socket, device or symlink is never opened, and what is
/// created later inherits the project anyway. The walk is the one of
/// [`walk`]: bounded descriptors, nothing followed.
fn set_project(dir: &Path, project: u32) -> Result<()> {
    struct Project(u32);
    impl Visit for Project {
        fn entry(&mut self, dir: BorrowedFd<'_>, name: &CStr, st: &FileStat) -> io::Result<bool> {
            let directory = walk::is_dir(st);
            if !directory && !walk::is_file(st) {
                return Ok(false);
            }
            let flags = if directory {
                walk::OPEN_DIR
            } else {
                walk::OPEN_DIR.difference(OFlag::O_DIRECTORY)
            };
            let fd = match openat(dir, name, flags, Mode::empty()) {
                Ok(fd) => fd,
                // Changed since it was listed: what is new inherits.
                Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR | Errno::ENXIO) => {
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            };
            let now = fstat(&fd)?;
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                return Ok(false);
            }
            sys::set_project(fd.as_fd(), self.0, directory)?;
            Ok(directory)
        }
    }
    let top = open_dir(dir)?;
    sys::set_project(top.as_fd(), project, true).map_err(err(dir, "set the project id"))?;
    walk::walk(top.as_fd(), &mut Project(project))
        .map(drop)
        .map_err(err(dir, "set the project id of what is in it"))
}

fn set_project_limit(dir: &Path, project: u32, bytes: u64) -> Result<()> {
    let fd = open_dir(dir)?;
    sys::set_project_limit(fd.as_fd(), project, bytes).map_err(err(dir, "set the project quota"))
}

/// Bytes used by `project` on the filesystem of `dir`.
pub fn project_usage(dir: &Path, project: u32) -> Option<u64> {
    let fd = open_dir(dir).ok()?;
    sys::project_usage(fd.as_fd(), project).ok()
}

/// Where a VPS keeps its disk: `disk` holds `upper` and `work`.
pub struct VpsDisk {
    pub disk: PathBuf,
    pub image: PathBuf,
}

impl VpsDisk {
    pub fn of(dir: &crate::model::VpsDir) -> Self {
        Self {
            disk: dir.disk(),
            image: dir.disk_image(),
        }
    }

    /// The backend a new VPS under `vps_root` gets.
    pub fn choose_backend(vps_root: &Path, project: u32) -> DiskBackend {
        if has_project_quota(vps_root) {
            DiskBackend::ProjectQuota { project }
        } else {
            DiskBackend::Image
        }
    }

    /// Make the disk of a new VPS with a limit of `bytes`; an image's root
    /// is owned by `owner` (the VPS root's host id).
    pub fn create(&self, backend: DiskBackend, bytes: u64, owner: u32) -> Result<()> {
        fs::create_dir_all(&self.disk).map_err(err(&self.disk, "create"))?;
        match backend {
            DiskBackend::ProjectQuota { project } => {
                set_project(&self.disk, project)?;
                set_project_limit(&self.disk, project, bytes)
            }
            DiskBackend::Image => {
                let f = fs::File::create(&self.image).map_err(err(&self.image, "create"))?;
                f.set_len(bytes).map_err(err(&self.image, "size"))?;
                drop(f);
                run(
                    Command::new("mkfs.ext4")
                        .args(["-q", "-F", "-m", "0", "-E"])
                        .arg(format!("root_owner={owner}:{owner}"))
                        .arg(&self.image),
                    &self.image,
                    "format the disk image (needs mkfs.ext4 from e2fsprogs)",
                )?;
                self.mount_image()
            }
        }
    }

    /// Put an existing VPS's disk under a project quota (a limit added
    /// with `set`, where the filesystem has project quotas).
    pub fn add_project_limit(&self, project: u32, bytes: u64) -> Result<()> {
        set_project(&self.disk, project)?;
        set_project_limit(&self.disk, project, bytes)
    }

    /// Mount the image at `disk` unless it already is.
    pub fn mount_image(&self) -> Result<()> {
        if is_mountpoint(&self.disk) {
            return Ok(());
        }
        run(
            Command::new("mount")
                .args(["-t", "ext4", "-o", "loop,nosuid,nodev"])
                .arg(&self.image)
                .arg(&self.disk),
            &self.image,
            "loop-mount the disk image",
        )
    }

    /// Unmount the image (the loop device is freed with the last user).
    pub fn unmount(&self) -> Result<()> {
        if is_mountpoint(&self.disk) {
            nix::mount::umount2(&self.disk, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| err(&self.disk, "unmount the disk image")(e.into()))?;
        }
        Ok(())
    }

    /// Change the limit of a VPS's disk. Only a project quota can change
    /// (at once, even while the VPS runs); an image keeps its size.
    pub fn resize(&self, backend: DiskBackend, bytes: u64) -> Result<()> {
        match backend {
            DiskBackend::ProjectQuota { project } => set_project_limit(&self.disk, project, bytes),
            DiskBackend::Image => Err(DiskError {
                path: self.image.display().to_string(),
                what: "resize the disk image",
                why: "an image-backed disk keeps the size it was created with; put the state \
                      directory on XFS (pquota) or ext4 (prjquota) for resizable limits"
                    .into(),
            }),
        }
    }

    /// Bytes the VPS's layer uses, as its limit counts them; without a
    /// limit, the blocks of the files in it, walked in the background (a
    /// figure at most a few seconds old, see [`usage`]).
    pub fn usage(&self, backend: Option<DiskBackend>) -> Option<u64> {
        match backend {
            Some(DiskBackend::ProjectQuota { project }) => project_usage(&self.disk, project),
            Some(DiskBackend::Image) => {
                let s = nix::sys::statvfs::statvfs(&self.disk).ok()?;
                Some((s.blocks() - s.blocks_free()) * s.fragment_size())
            }
            None => usage::walked(&self.disk),
        }
    }

    /// Forget the walked usage of a disk that is gone.
    pub fn forget_usage(&self) {
        usage::forget(&self.disk);
    }
}

fn run(cmd: &mut Command, path: &Path, what: &'static str) -> Result<()> {
    let out = cmd.output().map_err(err(path, what))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DiskError {
            path: path.display().to_string(),
            what,
            why: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn mount_source(dir: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let target = dir.to_str()?;
    info.lines().rev().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (left.split(' ').nth(4) == Some(target))
            .then(|| right.split(' ').nth(1).map(str::to_owned))?
    })
}

fn is_mountpoint(dir: &Path) -> bool {
    mount_source(dir).is_some()
}
