//! Pseudo-terminal ioctls: telling a pty master from anything else,
//! unlocking it, getting its peer without a path, making a terminal the
//! controlling one, and window sizes.
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use super::{Call, check, dispatch};

/// The pty number of `master` (TIOCGPTN); fails with ENOTTY on anything
/// that is not a pty master, so it doubles as the check that it is one.
pub fn pty_number(master: BorrowedFd<'_>) -> io::Result<u32> {
    let n = dispatch(
        || Call::PtyNumber,
        || {
            let mut n: libc::c_uint = 0;
            // SAFETY: TIOCGPTN writes one unsigned int through the pointer.
            check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) }.into())?;
            Ok(i64::from(n))
        },
    )?;
    u32::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::ERANGE))
}

/// Unlock the peer of `master` so it can be opened (TIOCSPTLCK 0).
pub fn unlock_pty(master: BorrowedFd<'_>) -> io::Result<()> {
    dispatch(
        || Call::PtyUnlock,
        || {
            let unlock: libc::c_int = 0;
            // SAFETY: TIOCSPTLCK reads one int through the pointer.
            check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) }.into())
        },
    )
    .map(drop)
}

/// The peer (slave side) of `master`, opened through the master itself
/// (TIOCGPTPEER), so no path under /dev/pts is looked up.
pub fn pty_peer(master: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let fd = dispatch(
        || Call::PtyPeer,
        || {
            // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd.
            check(
                unsafe {
                    libc::ioctl(
                        master.as_raw_fd(),
                        libc::TIOCGPTPEER,
                        libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
                    )
                }
                .into(),
            )
        },
    )?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Make `tty` the controlling terminal of this process's new session.
pub fn set_controlling_tty(tty: BorrowedFd<'_>) -> io::Result<()> {
    dispatch(
        || Call::SetControllingTty,
        || {
            // SAFETY: TIOCSCTTY takes an int by value (0: do not steal).
            check(unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSCTTY, 0) }.into())
        },
    )
    .map(drop)
}

/// The window size of terminal `tty` as (rows, columns).
pub fn window_size(tty: BorrowedFd<'_>) -> io::Result<(u16, u16)> {
    // SAFETY: winsize is plain old data; zeroed is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    dispatch(
        || Call::GetWindowSize,
        || {
            // SAFETY: TIOCGWINSZ writes one winsize through the pointer.
            check(unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) }.into())
        },
    )?;
    Ok((ws.ws_row, ws.ws_col))
}

/// Set the window size of terminal `tty`.
pub fn set_window_size(tty: BorrowedFd<'_>, (rows, cols): (u16, u16)) -> io::Result<()> {
    dispatch(
        || Call::SetWindowSize { rows, cols },
        || {
            let ws = libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads one winsize through the pointer.
            check(unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) }.into())
        },
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;

    use super::*;

    fn ptmx() -> OwnedFd {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/ptmx")
            .expect("/dev/ptmx")
            .into()
    }

    #[test]
    fn a_real_pty_pair_carries_bytes_and_window_sizes() {
        let master = ptmx();
        pty_number(master.as_fd()).expect("a pty master has a number");
        unlock_pty(master.as_fd()).unwrap();
        let peer = pty_peer(master.as_fd()).unwrap();
        set_window_size(master.as_fd(), (33, 101)).unwrap();
        assert_eq!(window_size(peer.as_fd()).unwrap(), (33, 101));
        nix::unistd::write(&peer, b"hi").unwrap();
        let mut buf = [0u8; 8];
        let n = nix::unistd::read(&master, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
    }

    #[test]
    fn things_that_are_no_pty_master_are_told_apart() {
        let file = tempfile::tempfile().unwrap();
        let err = pty_number(file.as_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
        let master = ptmx();
        unlock_pty(master.as_fd()).unwrap();
        let peer = pty_peer(master.as_fd()).unwrap();
        assert_eq!(
            pty_number(peer.as_fd()).unwrap_err().raw_os_error(),
            Some(libc::ENOTTY),
            "the slave side is not a master"
        );
    }
}
