//! What can go wrong acting on a VPS, each variant naming the VPS and what
//! to do.
use crate::{
    cgroup::manager::ManagerError,
    enforce::EnforceError,
    model::{ErrorKind, SpecError},
    rootfs::{TemplateError, disk::DiskError},
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
    #[error("VPS {name}: --ssh-key: {source}")]
    SshKey {
        name: String,
        source: super::ssh_keys::KeyError,
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

impl LifecycleError {
    /// The kind the API reports. cgroup, disk and network failures are the
    /// kernel refusing or lacking something (a controller, a quota, a
    /// link), so they are classified here rather than by their own types.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Spec(e) => e.kind(),
            Self::Store(e) => e.kind(),
            Self::Template(e) => e.kind(),
            Self::Enforce(e) => e.kind(),
            Self::Range(e) => e.kind(),
            Self::Addr(e) => e.kind(),
            Self::Files { source, .. } => source.kind(),
            Self::Shadow { source, .. } => source.kind(),
            Self::SshKey { source, .. } => source.kind(),
            Self::Cgroup { .. } | Self::Launch { .. } | Self::Disk { .. } | Self::Net { .. } => {
                ErrorKind::Kernel
            }
            Self::Running(_)
            | Self::RunningNoForce(_)
            | Self::NotRunning(_)
            | Self::NoDiskLimit(_) => ErrorKind::Conflict,
            Self::NoUser { .. } => ErrorKind::NotFound,
            Self::InitExited(_) | Self::Io { .. } => ErrorKind::Internal,
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
                    addr: std::net::Ipv4Addr::LOCALHOST.into(),
                    owner: name(),
                }
                .into(),
                ErrorKind::Conflict,
            ),
            (
                EnforceError::NoPolicy {
                    name: name(),
                    policy: "gone".into(),
                }
                .into(),
                ErrorKind::NotFound,
            ),
            (
                EnforceError::MissingLsm {
                    name: name(),
                    policy: "default".into(),
                    hooks: "file_open".into(),
                    why: "EPERM".into(),
                }
                .into(),
                ErrorKind::Kernel,
            ),
            (
                super::super::ranges::RangeError::Exhausted.into(),
                ErrorKind::Conflict,
            ),
            (
                LifecycleError::Launch {
                    name: name(),
                    why: "mount: EPERM".into(),
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
