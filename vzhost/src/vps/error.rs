//! What can go wrong acting on a VPS, each variant naming the VPS and what
//! to do.
use crate::{
    cgroup::manager::ManagerError, enforce::EnforceError, model::SpecError, rootfs::TemplateError,
    rootfs::disk::DiskError,
};

use super::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("VPS {name}: cgroups: {source}")]
    Cgroup { name: String, source: ManagerError },
    #[error(transparent)]
    Enforce(#[from] EnforceError),
    #[error("VPS {0} is already running")]
    Running(String),
    #[error("VPS {0} is running; stop it first, or destroy it with --force")]
    RunningNoForce(String),
    #[error("VPS {0} is not running; start it with `vzhost start {0}`")]
    NotRunning(String),
    /// The launcher helper's own report, from its stderr.
    #[error("VPS {name} failed to start: {why}")]
    Launch { name: String, why: String },
    #[error("VPS {0} failed to start: its init exited at once; see its console.log")]
    InitExited(String),
    #[error("VPS {name}: disk: {source}")]
    Disk { name: String, source: DiskError },
    #[error(
        "VPS {0} was created without --disk and this filesystem has no project quotas; recreate it with --disk"
    )]
    NoDiskLimit(String),
    #[error("VPS {name}: {what}: {source}")]
    Io {
        name: String,
        what: String,
        source: std::io::Error,
    },
    #[error("VPS {name}: {source}")]
    Files {
        name: String,
        source: crate::rootfs::safe::SafeError,
    },
    #[error("VPS {name}: {source}")]
    Shadow {
        name: String,
        source: super::passwd::ShadowError,
    },
    #[error("VPS {name} has no user {user} in its /etc/passwd")]
    NoUser { name: String, user: String },
    #[error(transparent)]
    Range(#[from] super::ranges::RangeError),
    #[error(transparent)]
    Addr(#[from] crate::net::AddrError),
    #[error("VPS {name}: network: {source}")]
    Net {
        name: String,
        source: crate::net::LinkError,
    },
}

pub type Result<T> = std::result::Result<T, LifecycleError>;
