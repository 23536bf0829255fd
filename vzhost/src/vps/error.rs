//! What can go wrong acting on a VPS, each variant naming the VPS and what
//! to do.
use crate::{
    cgroup::manager::ManagerError, ksal::KsalError, model::SpecError, rootfs::TemplateError,
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
    #[error("VPS {name}: KSAL: {source}")]
    Ksal {
        name: String,
        source: Box<KsalError>,
    },
    #[error("VPS {0} is already running")]
    Running(String),
    #[error("VPS {0} is running; stop it first, or destroy it with --force")]
    RunningNoForce(String),
    #[error("VPS {0} is not running; start it with `vzhost start {0}`")]
    NotRunning(String),
    #[error("VPS {name} failed to start: {why}")]
    Start { name: String, why: String },
    #[error("VPS {name}: {what}: {source}")]
    Io {
        name: String,
        what: String,
        source: std::io::Error,
    },
    #[error("VPS {name} has no user {user} in its /etc/passwd")]
    NoUser { name: String, user: String },
    #[error("no free user-id range is left for a new VPS")]
    NoIdRange,
    #[error(transparent)]
    Addr(#[from] crate::net::AddrError),
    #[error(
        "VPS {name} runs under policy {policy:?}, which is not in force; restore it, or recreate the VPS with another --policy"
    )]
    NoPolicy { name: String, policy: String },
    #[error("VPS {name}: network: {source}")]
    Net {
        name: String,
        source: crate::net::LinkError,
    },
}

pub type Result<T> = std::result::Result<T, LifecycleError>;
