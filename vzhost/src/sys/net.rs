//! Interface flags through the classic ioctl, for the one interface a new
//! network namespace has.
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::{Call, check, dispatch};

/// Bring up the loopback interface of the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    dispatch(|| Call::LoopbackUp, set_loopback_up).map(drop)
}

fn set_loopback_up() -> io::Result<i64> {
    // SAFETY: plain socket(2); the fd is owned right below.
    let raw = check(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }.into(),
    )?;
    // SAFETY: raw is a new fd nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: req is a valid ifreq for these ioctls.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) }.into())?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) }.into())
}
