//! Where a VPS keeps its files, what a running VPS is on the host, and how
//! its disk limit is enforced: plain data every room may hold.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a VPS's disk limit is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskBackend {
    /// A project quota with this project id.
    ProjectQuota { project: u32 },
    /// An ext4 image `<vps>/disk.img` mounted at `<vps>/disk`.
    Image,
}

/// Where one VPS keeps its files.
#[derive(Debug, Clone)]
pub struct VpsDir(pub PathBuf);

impl VpsDir {
    pub fn config(&self) -> PathBuf {
        self.0.join("config.json")
    }
    pub fn runtime(&self) -> PathBuf {
        self.0.join("runtime.json")
    }
    /// Holds the VPS's upper and work directories: a plain directory (with
    /// a project quota when limited) or a mounted image.
    pub fn disk(&self) -> PathBuf {
        self.0.join("disk")
    }
    /// The ext4 image mounted at `disk()` when that is how it is limited.
    pub fn disk_image(&self) -> PathBuf {
        self.0.join("disk.img")
    }
    /// The VPS's own writable layer.
    pub fn upper(&self) -> PathBuf {
        self.0.join("disk/upper")
    }
    pub fn work(&self) -> PathBuf {
        self.0.join("disk/work")
    }
    /// Mount point of the (idmapped) template inside the VPS's mount ns.
    pub fn lower(&self) -> PathBuf {
        self.0.join("lower")
    }
    /// Mount point of the merged root inside the VPS's mount ns.
    pub fn rootfs(&self) -> PathBuf {
        self.0.join("rootfs")
    }
    /// The newest console output (`console.log.1` beside it holds what
    /// came before): on the VPS's disk, so its quota counts it.
    pub fn console_log(&self) -> PathBuf {
        self.0.join("disk/console.log")
    }
    /// Where the console keeper of a running VPS listens for `vzhost
    /// console` (through the daemon; the state directory is root's only).
    pub fn console_socket(&self) -> PathBuf {
        self.0.join("console.sock")
    }
}

/// What is true while a VPS runs: its init process on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    pub init_pid: u32,
    /// Start time of init (field 22 of /proc/PID/stat), to tell it from a
    /// later process that reuses the pid.
    pub init_start: u64,
    /// Unix time when the VPS started.
    pub started_at: u64,
    /// Which init it runs (older runtimes: a plain one).
    #[serde(default)]
    pub init: InitKind,
}

/// The kind of init a VPS runs, which decides how it is asked to stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitKind {
    /// systemd: SIGTERM makes it re-execute itself; SIGRTMIN+3 halts it.
    Systemd,
    /// busybox init, sysvinit, vzhost's own: SIGTERM.
    #[default]
    Plain,
}

/// How a VPS's init ended when nobody asked it to (`poweroff` or
/// `reboot` inside, or a crash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "how", content = "detail")]
pub enum InitExit {
    /// reboot(2) with RESTART in its PID namespace: it is started again.
    Reboot,
    /// reboot(2) with POWER_OFF or HALT: it stays stopped.
    Poweroff,
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Killed(i32),
    /// Not seen by this daemon (started by an earlier one): taken as a
    /// poweroff.
    Unknown,
}

impl InitKind {
    /// The signal that asks this init to shut the VPS down.
    pub fn stop_signal(self) -> i32 {
        match self {
            Self::Systemd => libc::SIGRTMIN() + 3,
            Self::Plain => libc::SIGTERM,
        }
    }
}
