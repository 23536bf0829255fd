//! Talking to the daemon: plain calls, exec with the caller's own stdio
//! handed over, and enter with a pty relayed to the caller's terminal.
use std::{
    io::{IsTerminal as _, Read as _, Write as _},
    os::{
        fd::{AsFd as _, AsRawFd as _, OwnedFd},
        unix::net::UnixStream,
    },
    path::Path,
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use nix::{
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::termios,
};
use serde_json::Value;
use vzhost::daemon::api::{Channel, Request, Response};

fn connect(socket: &Path) -> anyhow::Result<Channel> {
    let sock = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the vzhost daemon at {} (is `vzhost daemon` running, and are you root?)",
            socket.display()
        )
    })?;
    Ok(Channel::new(sock))
}

fn answer(resp: Response) -> anyhow::Result<Value> {
    match resp {
        Response::Ok(v) => Ok(v),
        Response::Error(e) => bail!("{e}"),
    }
}

pub fn call(socket: &Path, req: &Request) -> anyhow::Result<Value> {
    let mut chan = connect(socket)?;
    chan.send(req, &[])?;
    let (resp, _) = chan.recv::<Response>()?;
    answer(resp)
}

fn exit_code(v: &Value) -> ExitCode {
    ExitCode::from(v["exit_code"].as_i64().unwrap_or(1).clamp(0, 255) as u8)
}

/// Run a command in the VPS with this process's stdin, stdout and stderr.
pub fn exec(socket: &Path, name: &str, argv: &[String]) -> anyhow::Result<ExitCode> {
    let mut chan = connect(socket)?;
    chan.send(
        &Request::Exec {
            name: name.to_owned(),
            argv: argv.to_vec(),
        },
        &[0, 1, 2],
    )?;
    let (resp, _) = chan.recv::<Response>()?;
    Ok(exit_code(&answer(resp)?))
}

/// Restores the terminal's mode when dropped.
struct RawMode(Option<termios::Termios>);

impl RawMode {
    fn enter() -> Self {
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

/// Copy our window size to the VPS's pty.
fn copy_winsize(master: &OwnedFd) {
    // SAFETY: winsize is plain old data; both ioctls take a winsize pointer.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// An interactive shell in the VPS: relay our terminal to its pty.
pub fn enter(socket: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let mut chan = connect(socket)?;
    chan.send(
        &Request::Enter {
            name: name.to_owned(),
        },
        &[],
    )?;
    let (resp, fds) = chan.recv::<Response>()?;
    answer(resp)?;
    let master = fds.into_iter().next().context("the daemon sent no pty")?;
    copy_winsize(&master);
    let _raw = RawMode::enter();
    let mut master_file = std::fs::File::from(master.try_clone()?);
    let mut stdin_open = true;
    let mut buf = [0u8; 4096];
    loop {
        let stdin = std::io::stdin();
        let sock_fd = chan.raw_fd();
        // SAFETY: the socket fd stays open (owned by chan) during poll.
        let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(sock_fd) };
        let mut fds = vec![
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(sock, PollFlags::POLLIN),
        ];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        poll(&mut fds, PollTimeout::NONE).context("poll")?;
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        let (m, s, i) = (ready(0), ready(1), stdin_open && ready(2));
        if m {
            match master_file.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let mut out = std::io::stdout();
                    out.write_all(&buf[..n])?;
                    out.flush()?;
                }
                // EIO: the shell closed the pty; the exit arrives next.
                _ => {
                    let (resp, _) = chan.recv::<Response>()?;
                    return Ok(exit_code(&answer(resp)?));
                }
            }
        }
        if i {
            match std::io::stdin().read(&mut buf) {
                Ok(n) if n > 0 => master_file.write_all(&buf[..n])?,
                _ => stdin_open = false,
            }
        }
        if s && !m {
            let (resp, _) = chan.recv::<Response>()?;
            return Ok(exit_code(&answer(resp)?));
        }
    }
}

/// The new password: from stdin when it is not a terminal, else prompted twice.
pub fn read_password(user: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.read_line(&mut line)?;
        let pw = line.trim_end_matches(['\n', '\r']).to_owned();
        if pw.is_empty() {
            bail!("no password on stdin");
        }
        return Ok(pw);
    }
    let prompt = |what: &str| -> anyhow::Result<String> {
        eprint!("{what}");
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(termios::LocalFlags::ECHO);
        termios::tcsetattr(stdin.as_fd(), termios::SetArg::TCSANOW, &quiet)?;
        let mut line = String::new();
        let r = stdin.read_line(&mut line);
        termios::tcsetattr(stdin.as_fd(), termios::SetArg::TCSANOW, &saved)?;
        eprintln!();
        r?;
        Ok(line.trim_end_matches(['\n', '\r']).to_owned())
    };
    let first = prompt(&format!("New password for {user}: "))?;
    if first != prompt("Again: ")? {
        bail!("the passwords do not match");
    }
    Ok(first)
}
