//! `exec` and `enter`: the command runs in the VPS on pipes or on a pty
//! the daemon hands over, and this process relays its own stdio to them
//! until the daemon reports the command's exit. The caller's descriptors
//! never leave this process.
use std::{
    io::IsTerminal as _,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    process::ExitCode,
};

use nix::{
    errno::Errno,
    fcntl::{FcntlArg, OFlag, fcntl},
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::termios,
};
use vzhost::daemon::{
    api::{Enter, Exec, Session},
    channel::Channel,
};

use super::client::{Client, ClientError, read};

/// Run `argv` in VPS `name`; the command's exit status is ours.
pub fn exec(client: &Client, name: &str, argv: &[String]) -> anyhow::Result<ExitCode> {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (chan, fds) = client.session(Exec {
        name: name.to_owned(),
        argv: argv.to_vec(),
        tty,
    })?;
    if tty {
        on_pty(chan, fds)
    } else {
        let [stdin, stdout, stderr]: [OwnedFd; 3] = fds
            .try_into()
            .map_err(|_| ClientError::Protocol("an exec without its three pipes"))?;
        let io = Io {
            input: Some((std_fd(0), stdin)),
            outputs: vec![(stdout, std_fd(1)), (stderr, std_fd(2))],
            detach: None,
        };
        io.relay(chan)?.exit_code()
    }
}

/// An interactive shell in VPS `name`.
pub fn enter(client: &Client, name: &str) -> anyhow::Result<ExitCode> {
    let (chan, fds) = client.session(Enter {
        name: name.to_owned(),
    })?;
    on_pty(chan, fds)
}

fn on_pty(chan: Channel, fds: Vec<OwnedFd>) -> anyhow::Result<ExitCode> {
    let master = fds.into_iter().next().ok_or(ClientError::Protocol(
        "a session on a pty without its master",
    ))?;
    if let Ok(size) = vzhost::sys::window_size(std_fd(0)) {
        let _ = vzhost::sys::set_window_size(master.as_fd(), size);
    }
    let _raw = RawMode::enter();
    let io = Io {
        input: Some((std_fd(0), master.try_clone()?)),
        outputs: vec![(master, std_fd(1))],
        detach: None,
    };
    io.relay(chan)?.exit_code()
}

pub(super) fn std_fd(fd: i32) -> BorrowedFd<'static> {
    // SAFETY: the standard descriptors stay open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

fn code(exit_code: i32) -> ExitCode {
    ExitCode::from(exit_code.clamp(0, 255) as u8)
}

/// What to copy: our input to the command, the command's outputs to ours.
pub(super) struct Io<'a> {
    pub(super) input: Option<(BorrowedFd<'a>, OwnedFd)>,
    pub(super) outputs: Vec<(OwnedFd, BorrowedFd<'a>)>,
    /// A key that ends the relay when typed (the console's detach key);
    /// with one, the relay also ends when the outputs do (the console
    /// went away), as there is no command whose exit to wait for.
    pub(super) detach: Option<u8>,
}

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// The daemon reported the command's exit, with its status.
    Exited(i32),
    /// The detach key was typed.
    Detached,
    /// The outputs ended (with a detach key only).
    Closed,
}

impl Ended {
    /// The exit status of a command's session as ours.
    fn exit_code(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Exited(c) => Ok(code(c)),
            Self::Detached | Self::Closed => {
                Err(ClientError::Protocol("a command's session ended without its exit").into())
            }
        }
    }
}

const CHUNK: usize = 16 * 1024;

fn nonblocking(fd: BorrowedFd<'_>) {
    let _ = fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
}

/// Copy what `from` has now to `to`; false once `from` is done (end,
/// error) or `to` takes no more.
fn copy_available(from: BorrowedFd<'_>, to: BorrowedFd<'_>, buf: &mut [u8]) -> bool {
    match nix::unistd::read(from, buf) {
        Ok(0) => false,
        Ok(n) => write_all(to, &buf[..n]),
        Err(Errno::EAGAIN | Errno::EINTR) => true,
        // EIO: the pty's last user is gone.
        Err(_) => false,
    }
}

fn write_all(to: BorrowedFd<'_>, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match nix::unistd::write(to, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut out = [PollFd::new(to, PollFlags::POLLOUT)];
                let _ = poll(&mut out, PollTimeout::NONE);
            }
            Err(_) => return false,
        }
    }
    true
}

impl Io<'_> {
    /// Relay until the daemon reports the exit, then pass on what the
    /// command wrote before it exited; returns its exit status. (Or until
    /// the detach key or the end of the outputs, with a detach key.)
    pub(super) fn relay(mut self, mut chan: Channel) -> Result<Ended, ClientError> {
        for (from, _) in &self.outputs {
            nonblocking(from.as_fd());
        }
        if let Some((_, to)) = &self.input {
            nonblocking(to.as_fd());
        }
        let mut buf = vec![0u8; CHUNK];
        // Read from our input, not yet written to the command.
        let mut pending: Vec<u8> = Vec::new();
        let mut input_open = true;
        loop {
            let mut fds = vec![PollFd::new(chan.socket().as_fd(), PollFlags::POLLIN)];
            let input_at = match &self.input {
                Some((ours, _)) if pending.is_empty() && input_open => {
                    fds.push(PollFd::new(*ours, PollFlags::POLLIN));
                    Some(fds.len() - 1)
                }
                Some((_, theirs)) if !pending.is_empty() => {
                    fds.push(PollFd::new(theirs.as_fd(), PollFlags::POLLOUT));
                    Some(fds.len() - 1)
                }
                _ => None,
            };
            let outputs_at = fds.len();
            fds.extend(
                self.outputs
                    .iter()
                    .map(|(from, _)| PollFd::new(from.as_fd(), PollFlags::POLLIN)),
            );
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(ClientError::Api(std::io::Error::from(e).into())),
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            if ready[0] {
                break;
            }
            if input_at.is_some_and(|i| ready[i])
                && self.pump_input(&mut pending, &mut input_open, &mut buf)
            {
                return Ok(Ended::Detached);
            }
            let mut i = outputs_at;
            self.outputs.retain(|(from, to)| {
                let keep = !ready[i] || copy_available(from.as_fd(), *to, &mut buf);
                i += 1;
                keep
            });
            if self.detach.is_some() && self.outputs.is_empty() {
                return Ok(Ended::Closed);
            }
        }
        // The command is gone: what it wrote is in the pipes; what a
        // process it left behind writes later goes nowhere.
        for (from, to) in &self.outputs {
            while matches!(nix::unistd::read(from.as_fd(), &mut buf), Ok(n) if n > 0 && write_all(*to, &buf[..n]))
            {
            }
        }
        drop(self);
        match read::<Session>(&mut chan)? {
            (Session::Exited { exit_code }, _) => Ok(Ended::Exited(exit_code)),
            (Session::Started, _) => Err(ClientError::Protocol("started twice")),
        }
    }

    /// Move our input along: read more, or write what is pending. At the
    /// end of our input the command's is closed, so it sees the end too.
    /// True when the detach key was read (what came before it is dropped
    /// if it cannot go at once).
    fn pump_input(&mut self, pending: &mut Vec<u8>, input_open: &mut bool, buf: &mut [u8]) -> bool {
        let Some((ours, theirs)) = &self.input else {
            return false;
        };
        if pending.is_empty() {
            match nix::unistd::read(*ours, buf) {
                Ok(n) if n > 0 => {
                    let key = self
                        .detach
                        .and_then(|k| buf[..n].iter().position(|&b| b == k));
                    if let Some(at) = key {
                        let _ = nix::unistd::write(theirs.as_fd(), &buf[..at]);
                        return true;
                    }
                    pending.extend_from_slice(&buf[..n]);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                _ => *input_open = false,
            }
        } else {
            match nix::unistd::write(theirs.as_fd(), pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                // The command closed its input: nothing more to give it.
                Err(_) => {
                    pending.clear();
                    *input_open = false;
                }
            }
        }
        if pending.is_empty() && !*input_open {
            self.input = None;
        }
        false
    }
}

/// Puts our terminal in raw mode, so keys reach the VPS's pty as typed;
/// restores it when dropped.
pub(super) struct RawMode(Option<termios::Termios>);

impl RawMode {
    pub(super) fn enter() -> Self {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Self(None);
        }
        let Ok(saved) = termios::tcgetattr(stdin.as_fd()) else {
            return Self(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(stdin.as_fd(), termios::SetArg::TCSANOW, &raw);
        Self(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), termios::SetArg::TCSANOW, saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        os::unix::net::UnixStream,
    };

    use vzhost::daemon::api::Reply;

    use super::*;

    struct Ends {
        /// Our input (the test writes the caller's stdin here).
        stdin_w: OwnedFd,
        /// The command's stdin, stdout and stderr, as the VPS sees them.
        cmd_in: OwnedFd,
        cmd_out: OwnedFd,
        cmd_err: OwnedFd,
        /// Where our stdout and stderr land.
        out_r: OwnedFd,
        err_r: OwnedFd,
        daemon: Channel,
    }

    /// Relay on a thread, between test pipes; returns its result handle.
    fn start() -> (Ends, std::thread::JoinHandle<Result<i32, ClientError>>) {
        let (ends, relay) = start_with(None);
        let relay = std::thread::spawn(move || {
            relay.join().unwrap().map(|ended| match ended {
                Ended::Exited(code) => code,
                other => panic!("{other:?}"),
            })
        });
        (ends, relay)
    }

    /// [`start`] with a detach key.
    fn start_with(
        detach: Option<u8>,
    ) -> (Ends, std::thread::JoinHandle<Result<Ended, ClientError>>) {
        let pipe = || nix::unistd::pipe().unwrap();
        let (stdin_r, stdin_w) = pipe();
        let (cmd_in, to_cmd) = pipe();
        let (from_out, cmd_out) = pipe();
        let (from_err, cmd_err) = pipe();
        let (out_r, out_w) = pipe();
        let (err_r, err_w) = pipe();
        let (ours, daemon) = UnixStream::pair().unwrap();
        let relay = std::thread::spawn(move || {
            // SAFETY: the fds outlive the relay: moved into this thread.
            let (i, o, e) = unsafe {
                (
                    BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&stdin_r)),
                    BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&out_w)),
                    BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&err_w)),
                )
            };
            let io = Io {
                input: Some((i, to_cmd)),
                outputs: vec![(from_out, o), (from_err, e)],
                detach,
            };
            let r = io.relay(Channel::new(ours));
            drop((stdin_r, out_w, err_w));
            r
        });
        let ends = Ends {
            stdin_w,
            cmd_in,
            cmd_out,
            cmd_err,
            out_r,
            err_r,
            daemon: Channel::new(daemon),
        };
        (ends, relay)
    }

    fn exited(chan: &mut Channel, exit_code: i32) {
        chan.send(&Reply::Ok(Session::Exited { exit_code }), &[])
            .unwrap();
    }

    fn text(fd: OwnedFd) -> String {
        let mut s = String::new();
        std::fs::File::from(fd).read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn output_written_before_the_exit_arrives_whole_with_the_status() {
        let (mut e, relay) = start();
        let stdout = std::thread::spawn(move || text(e.out_r));
        let mut out = std::fs::File::from(e.cmd_out);
        // More than a pipe holds: copied while it is written.
        out.write_all(&[b'x'; 100_000]).unwrap();
        nix::unistd::write(&e.cmd_err, b"warning\n").unwrap();
        out.write_all(b"end\n").unwrap();
        exited(&mut e.daemon, 3);
        assert_eq!(relay.join().unwrap().unwrap(), 3);
        let stdout = stdout.join().unwrap();
        assert_eq!(stdout.len(), 100_004);
        assert!(stdout.ends_with("xend\n"));
        assert_eq!(text(e.err_r), "warning\n");
    }

    #[test]
    fn the_end_of_our_input_reaches_the_command() {
        let (mut e, relay) = start();
        nix::unistd::write(&e.stdin_w, b"hello\n").unwrap();
        drop(e.stdin_w);
        // The command reads to the end: the relay closed its input.
        assert_eq!(text(e.cmd_in), "hello\n");
        exited(&mut e.daemon, 0);
        assert_eq!(relay.join().unwrap().unwrap(), 0);
    }

    #[test]
    fn nothing_is_relayed_after_the_exit() {
        let (mut e, relay) = start();
        exited(&mut e.daemon, 0);
        assert_eq!(relay.join().unwrap().unwrap(), 0);
        // A process left behind finds its output and input dead.
        assert_eq!(
            nix::unistd::write(&e.cmd_out, b"late\n"),
            Err(Errno::EPIPE),
            "nobody reads the command's stdout any more"
        );
        let mut buf = [0u8; 8];
        assert_eq!(
            nix::unistd::read(&e.cmd_in, &mut buf),
            Ok(0),
            "the command's stdin is at its end"
        );
        drop((e.stdin_w, e.cmd_err));
    }

    #[test]
    fn a_daemon_that_vanishes_is_an_error_not_an_exit_status() {
        let (e, relay) = start();
        drop(e.daemon);
        assert!(relay.join().unwrap().is_err());
    }

    #[test]
    fn the_detach_key_ends_the_relay_and_what_came_before_it_goes_through() {
        let (e, relay) = start_with(Some(0x1d));
        nix::unistd::write(&e.stdin_w, b"ls\x1dnever\n").unwrap();
        assert_eq!(relay.join().unwrap().unwrap(), Ended::Detached);
        drop(e.stdin_w);
        assert_eq!(text(e.cmd_in), "ls", "the key and what follows stay here");
    }

    #[test]
    fn with_a_detach_key_the_end_of_the_output_ends_the_relay() {
        let (e, relay) = start_with(Some(0x1d));
        nix::unistd::write(&e.cmd_out, b"bye\n").unwrap();
        drop((e.cmd_out, e.cmd_err));
        assert_eq!(relay.join().unwrap().unwrap(), Ended::Closed);
        assert_eq!(text(e.out_r), "bye\n");
        drop(e.daemon);
    }
}
