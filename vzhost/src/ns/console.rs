//! A VPS's console: what its init (and whatever inherits init's stdout and
//! stderr) writes, kept on the host, bounded.
//!
//! Init's stdout and stderr are a pipe. A keeper process, forked by the
//! launcher into the VPS's cgroups (so its memory, CPU and process slot
//! are the VPS's) but staying host root outside the VPS's namespaces,
//! drains the pipe into `console.log` and `console.log.1` under the VPS's
//! disk directory: a ring of two files of at most [`CONSOLE_CAP`] bytes
//! each. When `console.log` is full its content replaces `console.log.1`
//! and it starts empty, so the newest output is at the end of
//! `console.log` and the console never holds more than twice the cap.
//! Living under the VPS's disk directory, the files count in its disk
//! usage and its quota. The keeper ends when the last writer is gone
//! (every process of the VPS holding the pipe); it needs no daemon.
use std::{
    fs,
    io::{self, Read as _},
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::fs::{FileExt as _, OpenOptionsExt as _},
    },
    path::PathBuf,
};

use nix::unistd::{ForkResult, fork, pipe2};

use crate::{model::VpsDir, sys};

/// Bytes each of `console.log` and `console.log.1` holds at most.
pub const CONSOLE_CAP: u64 = 1 << 20;

/// The console files of a VPS, open, for its keeper.
pub struct Console {
    ring: Ring,
}

impl Console {
    /// Open (or create, 0600) the VPS's console files, never through a
    /// symlink.
    pub fn open(dir: &VpsDir) -> io::Result<Self> {
        let open = |path: PathBuf| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
        };
        let log = dir.console_log();
        let old = log.with_extension("log.1");
        Ok(Self {
            ring: Ring::new(open(log)?, open(old)?, CONSOLE_CAP)?,
        })
    }

    /// Fork the keeper (the launcher must be single-threaded); returns the
    /// write end of its pipe, to become init's stdout and stderr.
    pub fn keep(self) -> io::Result<OwnedFd> {
        let (read, write) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: the launcher is single-threaded; the child only makes
        // syscalls and exits.
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop(write);
                let code = keeper(read, self.ring);
                // SAFETY: _exit is always safe in a forked child.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { .. } => Ok(write),
        }
    }
}

/// The keeper: drain `pipe` into `ring` until no writer is left.
fn keeper(pipe: OwnedFd, mut ring: Ring) -> i32 {
    // Nothing of the launcher's stays open here: its stdio are the
    // daemon's pipes, and the daemon waits for them to close.
    let Ok(null) = fs::File::open("/dev/null") else {
        return 1;
    };
    let stdio = nix::unistd::dup2_stdin(&null)
        .and_then(|()| nix::unistd::dup2_stdout(&null))
        .and_then(|()| nix::unistd::dup2_stderr(&null));
    if stdio.is_err() {
        return 1;
    }
    let keep = [
        0,
        1,
        2,
        pipe.as_raw_fd(),
        ring.log.as_raw_fd(),
        ring.old.as_raw_fd(),
    ];
    if sys::close_all_but(&keep).is_err() {
        return 1;
    }
    let _ = nix::sys::prctl::set_name(c"vzhost-console");
    // A keeper killed by the VPS's OOM would leave its writers a broken pipe.
    let _ = fs::write("/proc/self/oom_score_adj", "-1000");
    let mut pipe = fs::File::from(pipe);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return 0,
            // A full disk drops console output; it never stops the VPS.
            Ok(n) => drop(ring.write(&buf[..n])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return 1,
        }
    }
}

/// Two files as a ring: writes go to `log` until it holds `cap` bytes;
/// then the content of `log` replaces that of `old`, and `log` starts over.
struct Ring {
    log: fs::File,
    old: fs::File,
    len: u64,
    cap: u64,
}

impl Ring {
    fn new(log: fs::File, old: fs::File, cap: u64) -> io::Result<Self> {
        let len = log.metadata()?.len();
        let mut ring = Self { log, old, len, cap };
        if len > cap {
            ring.rotate()?;
        }
        Ok(ring)
    }

    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.len >= self.cap {
                self.rotate()?;
            }
            let n = bytes.len().min((self.cap - self.len) as usize);
            let written = self.log.write_all_at(&bytes[..n], self.len);
            if let Err(e) = written {
                self.len = self.log.metadata()?.len();
                return Err(e);
            }
            self.len += n as u64;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// `log`'s last `cap` bytes become `old`; `log` is emptied.
    fn rotate(&mut self) -> io::Result<()> {
        let from = self.len.saturating_sub(self.cap);
        let mut buf = vec![0u8; 64 << 10];
        self.old.set_len(0)?;
        let mut at = from;
        while at < self.len {
            let n = self.log.read_at(&mut buf, at)?;
            if n == 0 {
                break;
            }
            self.old.write_all_at(&buf[..n], at - from)?;
            at += n as u64;
        }
        self.log.set_len(0)?;
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(dir: &std::path::Path, cap: u64) -> Ring {
        let open = |name: &str| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(name))
                .unwrap()
        };
        Ring::new(open("console.log"), open("console.log.1"), cap).unwrap()
    }

    #[test]
    fn the_console_never_holds_more_than_two_caps_and_keeps_the_newest() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = ring(tmp.path(), 10);
        r.write(b"aaaaaaaaaabbbbbbbbbbccc").unwrap();
        let read = |n: &str| fs::read_to_string(tmp.path().join(n)).unwrap();
        assert_eq!(read("console.log"), "ccc");
        assert_eq!(read("console.log.1"), "bbbbbbbbbb");
        for _ in 0..1000 {
            r.write(b"0123456").unwrap();
        }
        assert!(read("console.log").len() <= 10);
        assert_eq!(read("console.log.1").len(), 10);
        let newest = read("console.log.1") + &read("console.log");
        assert!(newest.ends_with("0123456"), "{newest}");
    }

    #[test]
    fn an_overlong_log_from_before_is_cut_to_its_newest_cap() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("console.log"), "0123456789abcdef").unwrap();
        let mut r = ring(tmp.path(), 10);
        r.write(b"x").unwrap();
        let read = |n: &str| fs::read_to_string(tmp.path().join(n)).unwrap();
        assert_eq!(read("console.log.1"), "6789abcdef");
        assert_eq!(read("console.log"), "x");
    }
}
