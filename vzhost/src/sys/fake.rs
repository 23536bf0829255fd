//! A recording test double for the kernel seam (unit tests only). While a
//! [`Fake`] lives, every call made on its thread through
//! [`super::dispatch`] is recorded in order; its answer function returns
//! `Some(result)` to stand in for the kernel, or `None` to let the real
//! call run. Calls that answer with a list of ids (a BPF_PROG_QUERY) get
//! theirs from [`Fake::answer_ids`].
use std::{cell::RefCell, io, os::fd::IntoRawFd as _, rc::Rc};

use super::Call;

type Answer = Box<dyn FnMut(&Call) -> Option<io::Result<i64>>>;
type IdsAnswer = Box<dyn FnMut(&Call) -> Option<io::Result<Vec<u32>>>>;

struct Installed {
    calls: Rc<RefCell<Vec<Call>>>,
    answer: Answer,
    ids: Option<IdsAnswer>,
}

thread_local! {
    static INSTALLED: RefCell<Option<Installed>> = const { RefCell::new(None) };
}

/// The fake's answer to `call`, if one is installed on this thread.
pub(super) fn answer(call: Call) -> Option<io::Result<i64>> {
    INSTALLED.with(|slot| {
        let mut slot = slot.borrow_mut();
        let installed = slot.as_mut()?;
        let result = (installed.answer)(&call);
        installed.calls.borrow_mut().push(call);
        result
    })
}

/// The fake's list of ids for `call`: from its ids answer if it has one,
/// else empty when its answer says the call succeeds.
pub(super) fn answer_ids(call: Call) -> Option<io::Result<Vec<u32>>> {
    INSTALLED.with(|slot| {
        let mut slot = slot.borrow_mut();
        let installed = slot.as_mut()?;
        let result = match &mut installed.ids {
            Some(ids) => ids(&call),
            None => (installed.answer)(&call).map(|r| r.map(|_| Vec::new())),
        };
        installed.calls.borrow_mut().push(call);
        result
    })
}

/// An installed fake; dropping it restores the real kernel.
pub struct Fake {
    calls: Rc<RefCell<Vec<Call>>>,
}

impl Fake {
    /// Record this thread's calls and answer them with `answer`.
    pub fn install(answer: impl FnMut(&Call) -> Option<io::Result<i64>> + 'static) -> Self {
        let calls = Rc::new(RefCell::new(Vec::new()));
        INSTALLED.with(|slot| {
            *slot.borrow_mut() = Some(Installed {
                calls: calls.clone(),
                answer: Box::new(answer),
                ids: None,
            });
        });
        Self { calls }
    }

    /// Answer the calls that list ids with `ids` (`None`: the real call).
    #[must_use]
    pub fn answer_ids(
        self,
        ids: impl FnMut(&Call) -> Option<io::Result<Vec<u32>>> + 'static,
    ) -> Self {
        INSTALLED.with(|slot| {
            if let Some(installed) = slot.borrow_mut().as_mut() {
                installed.ids = Some(Box::new(ids));
            }
        });
        self
    }

    /// Every call answered or passed through so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        INSTALLED.with(|slot| *slot.borrow_mut() = None);
    }
}

/// A successful call that returns 0.
pub fn ok() -> Option<io::Result<i64>> {
    Some(Ok(0))
}

/// A call that fails with `errno`.
pub fn fail(errno: i32) -> Option<io::Result<i64>> {
    Some(Err(io::Error::from_raw_os_error(errno)))
}

/// A call that returns a new descriptor (of /dev/null), for calls whose
/// result the caller owns and closes.
pub fn new_fd() -> Option<io::Result<i64>> {
    Some(std::fs::File::open("/dev/null").map(|f| i64::from(f.into_raw_fd())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;

    #[test]
    fn records_calls_in_order_and_answers_them() {
        let fake = Fake::install(|call| match call {
            Call::PidfdOpen { pid: 7 } => new_fd(),
            Call::PidfdSendSignal { .. } => fail(libc::ESRCH),
            _ => ok(),
        });
        let fd = sys::pidfd_open(7).expect("the fake's fd");
        let err = sys::pidfd_send_signal(std::os::fd::AsFd::as_fd(&fd), libc::SIGKILL)
            .expect_err("the fake refuses");
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
        assert_eq!(
            fake.calls(),
            vec![
                Call::PidfdOpen { pid: 7 },
                Call::PidfdSendSignal {
                    signal: libc::SIGKILL
                }
            ]
        );
    }

    #[test]
    fn a_dropped_fake_lets_the_kernel_answer_again() {
        {
            let _fake = Fake::install(|_| fail(libc::EPERM));
            assert!(sys::pidfd_open(std::process::id()).is_err());
        }
        assert!(sys::pidfd_open(std::process::id()).is_ok());
    }
}
