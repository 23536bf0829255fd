//! A VPS's console: a pty of the VPS's own, bound at its /dev/console and
//! PID 1's stdin, stdout and stderr, whose master a keeper on the host
//! holds. What the VPS writes there is kept, bounded, and relayed to one
//! `vzhost console` at a time.
//!
//! - The pty comes from the VPS's own devpts instance, allocated by PID 1
//!   as the VPS's root (as `vzhost exec -t` allocates one, see
//!   [`super::attach::open_pty`]): nothing of the host's /dev/pts is ever
//!   in the VPS, and the kernel applies the VPS's own permissions.
//! - The keeper is forked by the launcher into the VPS's cgroups (its
//!   memory, CPU and process slot are the VPS's) but stays outside the
//!   VPS's namespaces, where the VPS cannot name it. It opens what it
//!   needs as host root (the log files, a listening socket in the VPS's
//!   state directory), receives the master and a pidfd of PID 1 from PID
//!   1 over a socket pair, then drops every capability: from then on it
//!   works only with the descriptors it holds.
//! - The keeper drains the master into `console.log` and `console.log.1`
//!   under the VPS's disk directory: a ring of two files of at most
//!   [`CONSOLE_CAP`] bytes each. When `console.log` is full its content
//!   replaces `console.log.1` and it starts empty, so the newest output is
//!   at the end of `console.log` and the console never holds more than
//!   twice the cap; living on the VPS's disk, they count in its quota. The
//!   pty's CR LF line ends are kept as LF in the log.
//! - It ends when PID 1 does ([`super::console_relay`]); it needs no daemon.
use std::{
    fs,
    io::{self, IoSlice, IoSliceMut},
    os::{
        fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::{
            fs::{FileExt as _, OpenOptionsExt as _, PermissionsExt as _},
            net::UnixListener,
        },
    },
    path::PathBuf,
};

use nix::{
    sys::socket::{
        AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
        sendmsg, socketpair,
    },
    unistd::{ForkResult, fork},
};

use super::console_relay::Relay;
pub use super::console_relay::{ATTACHED, BUSY};
use crate::{model::VpsDir, sys};

/// Bytes each of `console.log` and `console.log.1` holds at most.
pub const CONSOLE_CAP: u64 = 1 << 20;

/// The console files and socket of a VPS, open, for its keeper.
pub struct Console {
    ring: Ring,
    listener: UnixListener,
}

impl Console {
    /// Open (or create, 0600) the VPS's console files, never through a
    /// symlink, and listen on its console socket (0600, in the VPS's
    /// root-only state directory; a stale one from a previous run goes).
    pub fn open(dir: &VpsDir) -> io::Result<Self> {
        let open = |path: PathBuf| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
        };
        let log = dir.console_log();
        let old = log.with_extension("log.1");
        let ring = Ring::new(open(log)?, open(old)?, CONSOLE_CAP)?;
        let socket = dir.console_socket();
        match fs::remove_file(&socket) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&socket)?;
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Self { ring, listener })
    }

    /// Fork the keeper (the launcher must be single-threaded); returns the
    /// link PID 1 hands the console over on.
    pub fn keep(self) -> io::Result<ConsoleLink> {
        let (ours, theirs) = link_pair()?;
        // SAFETY: the launcher is single-threaded; the child only makes
        // syscalls and exits.
        match unsafe { fork() }? {
            ForkResult::Child => {
                drop(theirs);
                let code = keeper(ours, self);
                // SAFETY: _exit is always safe in a forked child.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { .. } => Ok(ConsoleLink(theirs)),
        }
    }
}

/// PID 1's end of the link to its console keeper.
pub struct ConsoleLink(OwnedFd);

impl ConsoleLink {
    /// From PID 1, once its console pty exists: hand the keeper the
    /// master and a pidfd of PID 1 itself (so the keeper ends with it).
    pub fn hand_over(self, master: OwnedFd) -> io::Result<()> {
        let me = sys::pidfd_open(std::process::id())?;
        let fds = [master.as_raw_fd(), me.as_raw_fd()];
        sendmsg::<()>(
            self.0.as_raw_fd(),
            &[IoSlice::new(b"console")],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }
}

/// The master and PID 1's pidfd, as PID 1 sent them; None if PID 1 went
/// before it did (its root could not be built).
fn receive(link: &OwnedFd) -> Option<(OwnedFd, OwnedFd)> {
    let mut byte = [0u8; 16];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [IoSliceMut::new(&mut byte)];
    let msg = loop {
        match recvmsg::<()>(
            link.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::Error::EINTR) => {}
            other => break other.ok()?,
        }
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for cmsg in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: descriptors just received; nothing else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next()) {
        (Some(master), Some(pid1)) if sys::pty_number(master.as_fd()).is_ok() => {
            Some((master, pid1))
        }
        _ => None,
    }
}

/// The keeper: set up, take the console from PID 1, give up privilege,
/// relay until PID 1 is gone.
fn keeper(link: OwnedFd, console: Console) -> i32 {
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
        link.as_raw_fd(),
        console.listener.as_raw_fd(),
        console.ring.log.as_raw_fd(),
        console.ring.old.as_raw_fd(),
    ];
    if sys::close_all_but(&keep).is_err() {
        return 1;
    }
    let _ = nix::sys::prctl::set_name(c"vzhost-console");
    // A keeper killed by the VPS's OOM would leave the VPS without its
    // console.
    let _ = fs::write("/proc/self/oom_score_adj", "-1000");
    let Some((master, pid1)) = receive(&link) else {
        return 0;
    };
    drop(link);
    // Everything is open: no privilege is needed any more, and none is
    // kept for what the VPS writes to work on.
    if sys::drop_capabilities().is_err() || nix::sys::prctl::set_dumpable(false).is_err() {
        return 1;
    }
    Relay::new(master, pid1, console.listener, console.ring).run()
}

/// Two files as a ring: writes go to `log` until it holds `cap` bytes;
/// then the content of `log` replaces that of `old`, and `log` starts over.
pub(super) struct Ring {
    log: fs::File,
    old: fs::File,
    len: u64,
    cap: u64,
    /// A CR last written was held back: it is dropped if LF follows.
    cr: bool,
}

impl Ring {
    pub(super) fn new(log: fs::File, old: fs::File, cap: u64) -> io::Result<Self> {
        let len = log.metadata()?.len();
        let mut ring = Self {
            log,
            old,
            len,
            cap,
            cr: false,
        };
        if len > cap {
            ring.rotate()?;
        }
        Ok(ring)
    }

    /// Keep `bytes` of the terminal's output, its CR LF as LF.
    pub(super) fn write_output(&mut self, bytes: &[u8]) -> io::Result<()> {
        // No CR to look at (a flood of it, most likely): as it is, without
        // a byte-by-byte pass.
        if !self.cr && !bytes.contains(&b'\r') {
            return self.write(bytes);
        }
        let mut text = Vec::with_capacity(bytes.len() + 1);
        for &b in bytes {
            if std::mem::take(&mut self.cr) && b != b'\n' {
                text.push(b'\r');
            }
            if b == b'\r' {
                self.cr = true;
            } else {
                text.push(b);
            }
        }
        self.write(&text)
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

/// The two ends of the socket PID 1 hands the console over on.
fn link_pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// A ring over `console.log` and `console.log.1` in `dir` (tests).
#[cfg(test)]
pub(super) fn test_ring(dir: &std::path::Path, cap: u64) -> Ring {
    let open = |name: &str| {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(name))
            .unwrap()
    };
    Ring::new(open("console.log"), open("console.log.1"), cap).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_never_holds_more_than_two_caps_and_keeps_the_newest() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = test_ring(tmp.path(), 10);
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
        let mut r = test_ring(tmp.path(), 10);
        r.write(b"x").unwrap();
        let read = |n: &str| fs::read_to_string(tmp.path().join(n)).unwrap();
        assert_eq!(read("console.log.1"), "6789abcdef");
        assert_eq!(read("console.log"), "x");
    }

    #[test]
    fn terminal_line_ends_are_logged_as_lf_even_split_across_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = test_ring(tmp.path(), 1 << 10);
        for chunk in [&b"one\r\ntwo\r"[..], b"\nbar\rx\r", b"\r\n"] {
            r.write_output(chunk).unwrap();
        }
        let log = fs::read_to_string(tmp.path().join("console.log")).unwrap();
        assert_eq!(log, "one\ntwo\nbar\rx\r\n");
    }

    #[test]
    fn a_pid1_that_went_before_handing_over_ends_the_keeper() {
        let (ours, theirs) = link_pair().unwrap();
        drop(theirs);
        assert!(receive(&ours).is_none());
    }

    #[test]
    fn a_console_that_is_no_pty_master_is_refused() {
        let (ours, theirs) = link_pair().unwrap();
        let file: OwnedFd = tempfile::tempfile().unwrap().into();
        ConsoleLink(theirs).hand_over(file).unwrap();
        assert!(receive(&ours).is_none(), "a plain file is not a console");
        let (ours, theirs) = link_pair().unwrap();
        let pty = super::super::attach::open_pty(std::path::Path::new("/dev/ptmx")).unwrap();
        ConsoleLink(theirs).hand_over(pty.master).unwrap();
        assert!(receive(&ours).is_some());
    }
}
