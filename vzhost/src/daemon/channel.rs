//! The API's framing on its Unix socket: one JSON object per line each way,
//! with file descriptors (the caller's ends of an exec's pipes, a pty
//! master) passed alongside a message as SCM_RIGHTS.
use std::{
    io::{IoSlice, IoSliceMut},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Serialize, de::DeserializeOwned};

use crate::model::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the other end closed the connection")]
    Closed,
    #[error("API I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed API message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("API message longer than {MAX_MESSAGE} bytes")]
    TooLong,
    #[error("more than {MAX_FDS} descriptors came with an API message")]
    TooManyFds,
}

impl ApiError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Json(_) | Self::TooLong | Self::TooManyFds => ErrorKind::Invalid,
            Self::Closed | Self::Io(_) => ErrorKind::Internal,
        }
    }
}

/// Descriptors one message may carry at most (an exec's three pipes).
pub const MAX_FDS: usize = 3;
/// A message's length at most, newline excluded.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Cuts a byte stream into lines; refuses a line that grows past
/// [`MAX_MESSAGE`] without ending. Pure, so it is fuzzed on its own.
#[derive(Debug, Default)]
pub struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole line, without its newline; `None` until one has
    /// arrived.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, ApiError> {
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(end) if end <= MAX_MESSAGE => {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                Ok(Some(line))
            }
            Some(_) => Err(ApiError::TooLong),
            None if self.buf.len() > MAX_MESSAGE => Err(ApiError::TooLong),
            None => Ok(None),
        }
    }
}

/// A framed, fd-passing connection.
pub struct Channel {
    sock: UnixStream,
    frames: Frames,
    fds: Vec<OwnedFd>,
}

impl Channel {
    pub fn new(sock: UnixStream) -> Self {
        Self {
            sock,
            frames: Frames::default(),
            fds: Vec::new(),
        }
    }

    pub fn socket(&self) -> &UnixStream {
        &self.sock
    }

    pub fn send<T: Serialize>(&mut self, msg: &T, fds: &[RawFd]) -> Result<(), ApiError> {
        let mut line = serde_json::to_vec(msg)?;
        line.push(b'\n');
        let mut sent = 0;
        while sent < line.len() {
            let iov = [IoSlice::new(&line[sent..])];
            let cmsg = [ControlMessage::ScmRights(fds)];
            let cmsgs: &[ControlMessage] = if sent == 0 && !fds.is_empty() {
                &cmsg
            } else {
                &[]
            };
            sent += sendmsg::<()>(
                self.sock.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)?;
        }
        Ok(())
    }

    /// The next message and the fds that came with it.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<(T, Vec<OwnedFd>), ApiError> {
        loop {
            if let Some(line) = self.frames.next_line()? {
                let msg = serde_json::from_slice(&line)?;
                return Ok((msg, std::mem::take(&mut self.fds)));
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
            let mut iov = [IoSliceMut::new(&mut chunk)];
            let msg = recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(std::io::Error::from)?;
            let n = msg.bytes;
            for c in msg.cmsgs().map_err(std::io::Error::from)? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    // SAFETY: the kernel just installed these fds for us.
                    self.fds.extend(
                        fds.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            if self.fds.len() > MAX_FDS {
                return Err(ApiError::TooManyFds);
            }
            if n == 0 {
                return Err(ApiError::Closed);
            }
            self.frames.push(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::daemon::api::{Ping, Request};

    #[test]
    fn lines_come_out_whole_however_the_bytes_arrive() {
        let mut f = Frames::default();
        f.push(b"{\"op\":");
        assert!(f.next_line().unwrap().is_none());
        f.push(b"\"ping\"}\n{\"op\":\"list\"}\npartial");
        assert_eq!(f.next_line().unwrap().unwrap(), b"{\"op\":\"ping\"}");
        assert_eq!(f.next_line().unwrap().unwrap(), b"{\"op\":\"list\"}");
        assert!(f.next_line().unwrap().is_none());
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut f = Frames::default();
        f.push(&vec![b'x'; MAX_MESSAGE + 1]);
        assert!(matches!(f.next_line(), Err(ApiError::TooLong)));
        let mut f = Frames::default();
        f.push(&vec![b' '; MAX_MESSAGE + 1]);
        f.push(b"\n");
        assert!(matches!(f.next_line(), Err(ApiError::TooLong)));
    }

    #[test]
    fn messages_and_descriptors_cross_together() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        let (r, w) = nix::unistd::pipe().unwrap();
        a.send(&Request::from(Ping {}), &[w.as_raw_fd()]).unwrap();
        drop(w);
        let (msg, fds) = b.recv::<Request>().unwrap();
        assert_eq!(msg.op(), "ping");
        let mut w = std::fs::File::from(fds.into_iter().next().unwrap());
        w.write_all(b"!").unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut buf).unwrap(), 1);
    }

    #[test]
    fn garbage_is_an_invalid_request_and_a_hang_up_is_not() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut b = Channel::new(b);
        a.write_all(b"not json\n").unwrap();
        let err = b.recv::<Request>().err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Invalid);
        drop(a);
        let err = b.recv::<Request>().err().unwrap();
        assert!(matches!(err, ApiError::Closed));
    }
}
