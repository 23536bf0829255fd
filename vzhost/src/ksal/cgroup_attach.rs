//! cgroup programs attached the way that outlives the daemon: with
//! BPF_PROG_ATTACH (BPF_F_ALLOW_MULTI) the kernel keeps the program on the
//! VPS cgroup until it is detached or the cgroup is removed, whatever
//! becomes of the process that attached it. (bpf_link attachments die
//! with their last fd, and some hosts refuse to pin links.)
use std::{io, os::fd::AsFd as _, os::fd::BorrowedFd};

use crate::sys;

/// A guard program to put on a VPS cgroup.
#[derive(Clone, Copy)]
pub struct Guard<'a> {
    pub program: &'static str,
    pub fd: BorrowedFd<'a>,
    /// Its kernel id, to tell it from what an earlier daemon attached.
    pub id: u32,
    pub attach_type: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("attaching {program} (attach type {attach_type}): {source}")]
    Attach {
        program: &'static str,
        attach_type: u32,
        source: io::Error,
    },
    #[error("listing the programs at attach type {attach_type}: {source}")]
    Query { attach_type: u32, source: io::Error },
    #[error("detaching the earlier program {id} at attach type {attach_type}: {source}")]
    Detach {
        id: u32,
        attach_type: u32,
        source: io::Error,
    },
}

/// Put `guards` on `cgroup` and take them over from whatever an earlier
/// daemon attached there: every new program is attached before any old
/// one is detached, so no hook is ever without one, and a failed attach
/// leaves every old program in place.
pub fn take_over(cgroup: BorrowedFd<'_>, guards: &[Guard<'_>]) -> Result<(), AttachError> {
    for g in guards {
        sys::bpf_prog_attach(cgroup, g.fd, g.attach_type).map_err(|source| {
            AttachError::Attach {
                program: g.program,
                attach_type: g.attach_type,
                source,
            }
        })?;
    }
    for g in guards {
        let keep = |id: &u32| {
            guards
                .iter()
                .any(|k| k.attach_type == g.attach_type && k.id == *id)
        };
        for id in attached(cgroup, g.attach_type)? {
            if !keep(&id) {
                detach_id(cgroup, g.attach_type, id)?;
            }
        }
    }
    Ok(())
}

/// Ids of the programs attached to `cgroup` at `attach_type`.
pub fn attached(cgroup: BorrowedFd<'_>, attach_type: u32) -> Result<Vec<u32>, AttachError> {
    sys::bpf_prog_query(cgroup, attach_type).map_err(|source| AttachError::Query {
        attach_type,
        source,
    })
}

fn detach_id(cgroup: BorrowedFd<'_>, attach_type: u32, id: u32) -> Result<(), AttachError> {
    sys::bpf_prog_get_fd_by_id(id)
        .and_then(|prog| sys::bpf_prog_detach(cgroup, prog.as_fd(), attach_type))
        .map_err(|source| AttachError::Detach {
            id,
            attach_type,
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;

    use super::*;
    use crate::sys::{
        Call,
        fake::{self, Fake},
    };

    /// Ids the kernel gives the new daemon's programs; an earlier daemon's
    /// program on attach type `t` has id `OLD + t`.
    const NEW: u32 = 500;
    const OLD: u32 = 100;

    fn guards<'a>(fd: BorrowedFd<'a>, types: &[u32]) -> Vec<Guard<'a>> {
        types
            .iter()
            .map(|&t| Guard {
                program: "ksal_test",
                fd,
                id: NEW + t,
                attach_type: t,
            })
            .collect()
    }

    /// A kernel where each hook holds an earlier program and, once
    /// attached, the new one.
    fn restarted_host(fail_attach: Option<u32>) -> Fake {
        Fake::install(move |call| match call {
            Call::BpfProgAttach { attach_type } if Some(*attach_type) == fail_attach => {
                fake::fail(libc::EPERM)
            }
            Call::BpfProgGetFdById { .. } => fake::new_fd(),
            _ => fake::ok(),
        })
        .answer_ids(|call| match call {
            Call::BpfProgQuery { attach_type } => {
                Some(Ok(vec![OLD + attach_type, NEW + attach_type]))
            }
            _ => None,
        })
    }

    #[test]
    fn new_guards_are_attached_before_any_old_one_is_detached() {
        let fake = restarted_host(None);
        let cgroup = std::fs::File::open("/dev/null").unwrap();
        take_over(cgroup.as_fd(), &guards(cgroup.as_fd(), &[1, 10, 18])).unwrap();
        let calls = fake.calls();
        let last_attach = calls
            .iter()
            .rposition(|c| matches!(c, Call::BpfProgAttach { .. }))
            .unwrap();
        let first_detach = calls
            .iter()
            .position(|c| {
                matches!(
                    c,
                    Call::BpfProgDetach { .. } | Call::BpfProgGetFdById { .. }
                )
            })
            .unwrap();
        assert!(last_attach < first_detach, "{calls:#?}");
        let detached: Vec<_> = calls
            .iter()
            .filter_map(|c| match c {
                Call::BpfProgGetFdById { id } => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(
            detached,
            [OLD + 1, OLD + 10, OLD + 18],
            "only the old ones go"
        );
        let detaches = calls
            .iter()
            .filter(|c| matches!(c, Call::BpfProgDetach { .. }))
            .count();
        assert_eq!(detaches, 3);
    }

    #[test]
    fn a_failed_attach_detaches_nothing() {
        let fake = restarted_host(Some(10));
        let cgroup = std::fs::File::open("/dev/null").unwrap();
        let err = take_over(cgroup.as_fd(), &guards(cgroup.as_fd(), &[1, 10, 18])).unwrap_err();
        assert!(
            matches!(
                err,
                AttachError::Attach {
                    attach_type: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            fake.calls(),
            [
                Call::BpfProgAttach { attach_type: 1 },
                Call::BpfProgAttach { attach_type: 10 },
            ],
            "stops at the failure, and nothing old is touched"
        );
    }

    #[test]
    fn a_failed_detach_names_the_program_it_could_not_remove() {
        let _fake = Fake::install(|call| match call {
            Call::BpfProgGetFdById { .. } => fake::fail(libc::ENOENT),
            _ => fake::ok(),
        })
        .answer_ids(|_| Some(Ok(vec![OLD + 1])));
        let cgroup = std::fs::File::open("/dev/null").unwrap();
        let err = take_over(cgroup.as_fd(), &guards(cgroup.as_fd(), &[1])).unwrap_err();
        assert!(
            matches!(err, AttachError::Detach { id, attach_type: 1, .. } if id == OLD + 1),
            "{err}"
        );
    }
}
