//! Disk space limits for a VPS's own layer, like OpenVZ's DISKSPACE: a
//! project quota on its directory where the state filesystem has project
//! quotas (XFS `pquota`, ext4 `prjquota`), otherwise an ext4 image of its
//! own, loop-mounted in place (like OpenVZ's ploop). Either way the VPS's
//! upper and work directories live under `<vps>/disk`, so nothing else has
//! to know which one is in use.
use std::{
    fs,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
};

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

const PRJQUOTA: u32 = 2;
const Q_GETINFO: u32 = 0x80_0005;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
const QIF_BLIMITS: u32 = 1;
const QUOTA_BLOCK: u64 = 1024;
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_XFLAG_PROJINHERIT: u32 = 0x200;

fn qcmd(cmd: u32) -> u32 {
    (cmd << 8) | PRJQUOTA
}

#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

fn quotactl(dir: &fs::File, cmd: u32, id: u32, addr: *mut libc::c_void) -> std::io::Result<()> {
    // SAFETY: addr points to a buffer of the type `cmd` expects (or is
    // ignored); dir is an open file on the filesystem in question.
    let r = unsafe { libc::syscall(libc::SYS_quotactl_fd, dir.as_raw_fd(), qcmd(cmd), id, addr) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether the filesystem holding `dir` enforces project quotas.
pub fn has_project_quota(dir: &Path) -> bool {
    let Ok(f) = fs::File::open(dir) else {
        return false;
    };
    let mut info = [0u8; 64];
    quotactl(&f, Q_GETINFO, 0, info.as_mut_ptr().cast()).is_ok()
}

/// Put `dir` and everything under it into `project`, new files included.
fn set_project(dir: &Path, project: u32) -> Result<()> {
    let f = fs::File::open(dir).map_err(err(dir, "open"))?;
    let mut x = FsXattr::default();
    // SAFETY: FsXattr matches struct fsxattr for these ioctls.
    unsafe {
        if libc::ioctl(f.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x) < 0 {
            return Err(err(dir, "read project attributes")(
                std::io::Error::last_os_error(),
            ));
        }
        x.projid = project;
        if fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            x.xflags |= FS_XFLAG_PROJINHERIT;
        }
        if libc::ioctl(f.as_raw_fd(), FS_IOC_FSSETXATTR, &x) < 0 {
            return Err(err(dir, "set the project id")(
                std::io::Error::last_os_error(),
            ));
        }
    }
    if fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        for e in fs::read_dir(dir).map_err(err(dir, "list"))?.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_symlink()) {
                set_project(&e.path(), project)?;
            }
        }
    }
    Ok(())
}

fn set_project_limit(dir: &Path, project: u32, bytes: u64) -> Result<()> {
    let f = fs::File::open(dir).map_err(err(dir, "open"))?;
    // SAFETY: dqblk is plain old data; zeroed is valid.
    let mut q: libc::dqblk = unsafe { std::mem::zeroed() };
    q.dqb_bhardlimit = bytes.div_ceil(QUOTA_BLOCK);
    q.dqb_bsoftlimit = q.dqb_bhardlimit;
    q.dqb_valid = QIF_BLIMITS;
    quotactl(&f, Q_SETQUOTA, project, (&raw mut q).cast())
        .map_err(err(dir, "set the project quota"))
}

/// Bytes used by `project` on the filesystem of `dir`.
pub fn project_usage(dir: &Path, project: u32) -> Option<u64> {
    let f = fs::File::open(dir).ok()?;
    // SAFETY: as in set_project_limit.
    let mut q: libc::dqblk = unsafe { std::mem::zeroed() };
    quotactl(&f, Q_GETQUOTA, project, (&raw mut q).cast()).ok()?;
    Some(q.dqb_curspace)
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
    /// limit, the blocks of the files in it.
    pub fn usage(&self, backend: Option<DiskBackend>) -> Option<u64> {
        match backend {
            Some(DiskBackend::ProjectQuota { project }) => project_usage(&self.disk, project),
            Some(DiskBackend::Image) => {
                let s = nix::sys::statvfs::statvfs(&self.disk).ok()?;
                Some((s.blocks() - s.blocks_free()) * s.fragment_size())
            }
            None => Some(tree_bytes(&self.disk)),
        }
    }
}

/// Allocated bytes of the files under `dir` on its filesystem, each
/// hard-linked inode once (like `du -s`).
pub fn tree_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    fn walk(dir: &Path, dev: u64, seen: &mut std::collections::HashSet<u64>) -> u64 {
        let mut total = 0;
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev || (m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino())) {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                total += walk(&e.path(), dev, seen);
            }
        }
        total
    }
    fs::symlink_metadata(dir).map_or(0, |m| {
        m.blocks() * 512 + walk(dir, m.dev(), &mut Default::default())
    })
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
