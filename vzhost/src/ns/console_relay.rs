//! The console keeper's loop: everything the VPS writes to its console
//! goes to the log, and to the one attached `vzhost console` if there is
//! one; what that console types goes to the VPS. All of it non-blocking
//! and bounded, because the VPS controls the other side:
//!
//! - output is always read, so the VPS never stalls on its console; an
//!   attached client that reads slower than the VPS writes loses what
//!   does not fit in [`TO_CLIENT_CAP`] (the log keeps it);
//! - typed input waits in at most [`TO_VPS_CAP`] bytes for a VPS that does
//!   not read its console, and more is dropped, so the client is never
//!   held up (and can always detach);
//! - when nobody in the VPS has the console open (its getty hung up and
//!   has not reopened it yet), the master reports a hangup: the keeper
//!   looks again every [`RETRY`] rather than spin, and keeps the master;
//! - it ends when PID 1 does, after reading what is left.
use std::{
    io::{self, Read as _, Write as _},
    os::{
        fd::{AsFd as _, OwnedFd},
        unix::net::{UnixListener, UnixStream},
    },
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::{FcntlArg, OFlag, fcntl},
    poll::{PollFd, PollFlags, PollTimeout, poll},
};

use super::console::Ring;

/// What a client connecting to the keeper reads first: it is attached.
pub const ATTACHED: u8 = b'+';
/// ... or another client is, and this one is turned away.
pub const BUSY: u8 = b'-';

const CHUNK: usize = 64 << 10;
/// Output held for a slow client, at most.
const TO_CLIENT_CAP: usize = 64 << 10;
/// Typed input held for a VPS that does not read it, at most.
const TO_VPS_CAP: usize = 4 << 10;
/// How often a console nobody in the VPS has open is looked at again.
const RETRY: Duration = Duration::from_millis(100);
/// What is still read of the console once PID 1 is gone, at most.
const LAST_WORDS: usize = 1 << 20;

pub(super) struct Relay {
    master: OwnedFd,
    pid1: OwnedFd,
    listener: UnixListener,
    ring: Ring,
    client: Option<UnixStream>,
    to_client: Vec<u8>,
    to_vps: Vec<u8>,
    /// While nobody in the VPS has the console open: when to look again.
    idle_until: Option<Instant>,
}

impl Relay {
    pub(super) fn new(master: OwnedFd, pid1: OwnedFd, listener: UnixListener, ring: Ring) -> Self {
        Self {
            master,
            pid1,
            listener,
            ring,
            client: None,
            to_client: Vec::new(),
            to_vps: Vec::new(),
            idle_until: None,
        }
    }

    /// Relay until PID 1 is gone; the keeper's exit status.
    pub(super) fn run(mut self) -> i32 {
        if fcntl(&self.master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_err()
            || self.listener.set_nonblocking(true).is_err()
        {
            return 1;
        }
        // A serial console's size is unknown (0x0), which some programs
        // take badly: say what a terminal has by default.
        let _ = crate::sys::set_window_size(self.master.as_fd(), (24, 80));
        let mut buf = vec![0u8; CHUNK];
        loop {
            if self.idle_until.is_some_and(|t| Instant::now() >= t) {
                self.idle_until = None;
            }
            let mut master_events = PollFlags::POLLIN;
            if !self.to_vps.is_empty() {
                master_events |= PollFlags::POLLOUT;
            }
            let mut client_events = PollFlags::POLLIN;
            if !self.to_client.is_empty() {
                client_events |= PollFlags::POLLOUT;
            }
            let mut fds = vec![
                PollFd::new(self.pid1.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
            ];
            let master_at = self.idle_until.is_none().then(|| {
                fds.push(PollFd::new(self.master.as_fd(), master_events));
                fds.len() - 1
            });
            let client_at = self.client.as_ref().map(|c| {
                fds.push(PollFd::new(c.as_fd(), client_events));
                fds.len() - 1
            });
            let timeout = match self.idle_until {
                Some(t) => {
                    let ms = t.saturating_duration_since(Instant::now()).as_millis() + 1;
                    PollTimeout::try_from(ms.min(1000) as i32).unwrap_or(PollTimeout::NONE)
                }
                None => PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return 1,
            }
            let revents: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            drop(fds);
            if !revents[0].is_empty() {
                self.last_words(&mut buf);
                return 0;
            }
            if let Some(i) = master_at
                && !revents[i].is_empty()
            {
                self.take_output(&mut buf);
                if revents[i].contains(PollFlags::POLLOUT) {
                    self.flush_to_vps();
                }
            }
            if !revents[1].is_empty() {
                self.accept();
            }
            if let Some(i) = client_at
                && !revents[i].is_empty()
            {
                if revents[i].contains(PollFlags::POLLOUT) {
                    self.flush_to_client();
                }
                if revents[i]
                    .intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                {
                    self.take_typed(&mut buf);
                }
            }
        }
    }

    /// Take what the VPS wrote (all it has now, up to a buffer): into the
    /// log, and to the client. A pty hands over at most 4 KiB a read, so
    /// reading on until it has no more saves a poll and a log write each.
    fn take_output(&mut self, buf: &mut [u8]) {
        let mut got = 0;
        while got < buf.len() {
            match nix::unistd::read(&self.master, &mut buf[got..]) {
                Ok(n) if n > 0 => got += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                // EIO: nobody in the VPS has the console open just now.
                _ => {
                    if got == 0 {
                        self.idle_until = Some(Instant::now() + RETRY);
                    }
                    break;
                }
            }
        }
        if got == 0 {
            return;
        }
        // A full disk drops console output; it never stops the VPS.
        let _ = self.ring.write_output(&buf[..got]);
        if self.client.is_some() {
            let room = TO_CLIENT_CAP - self.to_client.len();
            self.to_client.extend_from_slice(&buf[..got.min(room)]);
        }
    }

    fn flush_to_vps(&mut self) {
        match nix::unistd::write(&self.master, &self.to_vps) {
            Ok(n) => drop(self.to_vps.drain(..n)),
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => self.to_vps.clear(),
        }
    }

    /// A new client: attached if none is, else told so and let go.
    fn accept(&mut self) {
        let Ok((mut stream, _)) = self.listener.accept() else {
            return;
        };
        if self.client.is_some() || stream.set_nonblocking(true).is_err() {
            let _ = stream.write(&[BUSY]);
            return;
        }
        // One byte into an empty socket buffer does not block.
        if stream.write(&[ATTACHED]).is_ok() {
            self.to_client.clear();
            self.client = Some(stream);
        }
    }

    /// Take what the client typed (what does not fit is dropped).
    fn take_typed(&mut self, buf: &mut [u8]) {
        let Some(client) = &mut self.client else {
            return;
        };
        match client.read(buf) {
            Ok(n) if n > 0 => {
                let room = TO_VPS_CAP - self.to_vps.len();
                self.to_vps.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Detached, or gone.
            _ => self.drop_client(),
        }
    }

    fn flush_to_client(&mut self) {
        let Some(client) = &mut self.client else {
            return;
        };
        match client.write(&self.to_client) {
            Ok(n) => drop(self.to_client.drain(..n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.drop_client(),
        }
    }

    fn drop_client(&mut self) {
        self.client = None;
        self.to_client.clear();
        self.to_vps.clear();
    }

    /// PID 1 is gone: log what the console still holds.
    fn last_words(&mut self, buf: &mut [u8]) {
        let mut read = 0;
        while read < LAST_WORDS {
            match nix::unistd::read(&self.master, buf) {
                Ok(n) if n > 0 => {
                    let _ = self.ring.write_output(&buf[..n]);
                    read += n;
                }
                Err(Errno::EINTR) => {}
                _ => break,
            }
        }
    }
}

#[cfg(test)]
#[path = "console_relay_tests.rs"]
mod tests;
