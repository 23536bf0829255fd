//! The attach helper's report to the daemon: one SOCK_SEQPACKET message,
//! with the pty master alongside when there is one.
use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg},
};
use serde::{Deserialize, Serialize};

use super::{ATTACH, HelperError, io_err};
use crate::model::ErrorKind;

/// A report's size on the wire at most (messages are cut to fit).
const MAX_REPORT: usize = 4096;

/// What the attach helper tells the daemon once it has joined the VPS, or
/// failed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Report {
    /// Joined; the pty master comes with it when the plan asked for one.
    Ready,
    Failed {
        kind: ErrorKind,
        message: String,
    },
}

pub(super) fn send_report(control: BorrowedFd<'_>, report: &Report, fd: Option<BorrowedFd<'_>>) {
    let mut bytes = serde_json::to_vec(report).expect("report serializes");
    if bytes.len() > MAX_REPORT
        && let Report::Failed { kind, message } = report
    {
        let cut = message.floor_char_boundary(MAX_REPORT / 2);
        bytes = serde_json::to_vec(&Report::Failed {
            kind: *kind,
            message: message[..cut].to_owned(),
        })
        .expect("report serializes");
    }
    let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    // Nobody to tell if the daemon is gone: the helper's exit says it all.
    let _ = sendmsg::<()>(
        control.as_raw_fd(),
        &[IoSlice::new(&bytes)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    );
}

pub(super) fn read_report(
    control: BorrowedFd<'_>,
    timeout: Duration,
) -> Result<(Report, Option<OwnedFd>), HelperError> {
    let mut pfd = [PollFd::new(control, PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    if poll(&mut pfd, ms).map_err(|e| io_err(ATTACH)(e.into()))? == 0 {
        return Err(HelperError::Timeout(timeout));
    }
    let mut buf = vec![0u8; MAX_REPORT];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        control.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| io_err(ATTACH)(e.into()))?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(|e| io_err(ATTACH)(e.into()))? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these fds for us.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let n = msg.bytes;
    if n == 0 {
        return Err(HelperError::Silent);
    }
    let report = serde_json::from_slice(&buf[..n]).map_err(|_| HelperError::Silent)?;
    Ok((report, fds.into_iter().next()))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;

    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

    use super::*;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn a_failure_report_arrives_with_its_kind() {
        let (a, b) = pair();
        let report = Report::Failed {
            kind: ErrorKind::Conflict,
            message: "the VPS is not running".into(),
        };
        send_report(b.as_fd(), &report, None);
        let (got, fd) = read_report(a.as_fd(), Duration::from_secs(1)).unwrap();
        assert_eq!(got, report);
        assert!(fd.is_none());
    }

    #[test]
    fn a_ready_report_carries_the_pty_master() {
        let (a, b) = pair();
        let (r, w) = nix::unistd::pipe().unwrap();
        send_report(b.as_fd(), &Report::Ready, Some(w.as_fd()));
        drop(w);
        let (got, fd) = read_report(a.as_fd(), Duration::from_secs(1)).unwrap();
        assert_eq!(got, Report::Ready);
        nix::unistd::write(fd.expect("an fd came along"), b"x").unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut buf).unwrap(), 1);
    }

    #[test]
    fn a_long_failure_is_cut_to_fit_one_packet() {
        let (a, b) = pair();
        let message = "é".repeat(MAX_REPORT);
        send_report(
            b.as_fd(),
            &Report::Failed {
                kind: ErrorKind::Kernel,
                message,
            },
            None,
        );
        let (got, _) = read_report(a.as_fd(), Duration::from_secs(1)).unwrap();
        let Report::Failed { kind, message } = got else {
            panic!("{got:?}")
        };
        assert_eq!(kind, ErrorKind::Kernel);
        assert!(!message.is_empty() && message.len() <= MAX_REPORT / 2);
    }

    #[test]
    fn a_silent_or_slow_helper_is_told_apart() {
        let (a, b) = pair();
        let err = read_report(a.as_fd(), Duration::from_millis(20)).unwrap_err();
        assert!(matches!(err, HelperError::Timeout(_)), "{err}");
        drop(b);
        let err = read_report(a.as_fd(), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, HelperError::Silent), "{err}");
        assert_eq!(err.kind(), ErrorKind::Internal);
    }
}
