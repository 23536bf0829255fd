//! What can go wrong acting on a VPS, each variant naming the VPS and what
//! to do.
use crate::{
    cgroup::manager::ManagerError,
    ksal::KsalError,
    model::{ErrorKind, SpecError},
    rootfs::TemplateError,
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

impl LifecycleError {
    /// The kind the API reports. cgroup, KSAL and network failures are the
    /// kernel refusing or lacking something (a controller, a hook, a link),
    /// so they are classified here rather than by their own types.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Spec(e) => e.kind(),
            Self::Store(e) => e.kind(),
            Self::Template(e) => e.kind(),
            Self::Addr(e) => e.kind(),
            Self::Cgroup { .. } | Self::Ksal { .. } | Self::Net { .. } | Self::Start { .. } => {
                ErrorKind::Kernel
            }
            Self::Running(_) | Self::RunningNoForce(_) | Self::NotRunning(_) | Self::NoIdRange => {
                ErrorKind::Conflict
            }
            Self::NoUser { .. } | Self::NoPolicy { .. } => ErrorKind::NotFound,
            Self::Io { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T> = std::result::Result<T, LifecycleError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Name;

    #[test]
    fn each_failure_has_the_kind_its_fix_calls_for() {
        let name = || "web".to_owned();
        let cases = [
            (
                LifecycleError::from(Name::new("Bad!").unwrap_err()),
                ErrorKind::Invalid,
            ),
            (StoreError::NotFound(name()).into(), ErrorKind::NotFound),
            (StoreError::Exists(name()).into(), ErrorKind::Conflict),
            (TemplateError::Unknown(name()).into(), ErrorKind::NotFound),
            (LifecycleError::Running(name()), ErrorKind::Conflict),
            (LifecycleError::RunningNoForce(name()), ErrorKind::Conflict),
            (LifecycleError::NotRunning(name()), ErrorKind::Conflict),
            (
                LifecycleError::NoUser {
                    name: name(),
                    user: "bob".into(),
                },
                ErrorKind::NotFound,
            ),
            (
                crate::net::AddrError::InUse {
                    addr: std::net::Ipv4Addr::LOCALHOST,
                    owner: name(),
                }
                .into(),
                ErrorKind::Conflict,
            ),
            (
                LifecycleError::Start {
                    name: name(),
                    why: "no BPF LSM".into(),
                },
                ErrorKind::Kernel,
            ),
            (
                LifecycleError::Io {
                    name: name(),
                    what: "write".into(),
                    source: std::io::Error::other("disk full"),
                },
                ErrorKind::Internal,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
    }
}
