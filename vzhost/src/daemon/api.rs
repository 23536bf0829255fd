//! The daemon's API on its Unix socket: one JSON object per line each way,
//! with file descriptors (the caller's stdio for exec, a pty for enter)
//! passed alongside as SCM_RIGHTS.
use std::{
    io::{IoSlice, IoSliceMut},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{model::Limits, vps::CreateRequest};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Create(CreateRequest),
    Start {
        name: String,
    },
    Stop {
        name: String,
    },
    Restart {
        name: String,
    },
    Destroy {
        name: String,
        force: bool,
    },
    List,
    /// Policy files and their state.
    PolicyList,
    PolicyShow {
        name: String,
    },
    /// KSAL events numbered after `after`; waits up to `wait_ms` for one.
    Events {
        name: Option<String>,
        after: u64,
        wait_ms: u64,
    },
    /// Beancounters of one VPS, or of all.
    Stat {
        name: Option<String>,
    },
    /// Followed by nothing: the caller's stdin, stdout, stderr come with it.
    Exec {
        name: String,
        argv: Vec<String>,
    },
    /// The daemon answers first with a pty master fd, then with the exit.
    Enter {
        name: String,
    },
    Set {
        name: String,
        limits: Limits,
    },
    TemplateList,
    TemplateImport {
        name: String,
        path: String,
    },
    Passwd {
        name: String,
        user: String,
        password: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(serde_json::Value),
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the daemon closed the connection")]
    Closed,
    #[error("API I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed API message: {0}")]
    Json(#[from] serde_json::Error),
}

const MAX_FDS: usize = 3;
const MAX_MESSAGE: usize = 1 << 20;

/// A framed, fd-passing connection.
pub struct Channel {
    sock: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Channel {
    pub fn new(sock: UnixStream) -> Self {
        Self {
            sock,
            buf: Vec::new(),
            fds: Vec::new(),
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
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
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let msg = serde_json::from_slice(&line[..end])?;
                return Ok((msg, std::mem::take(&mut self.fds)));
            }
            if self.buf.len() > MAX_MESSAGE {
                return Err(ApiError::Io(std::io::Error::other("message too large")));
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
            if n == 0 {
                return Err(ApiError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
