//! Socket families as an allowlist (issue 12: decide which socket families
//! a VPS may open at all). Under the shipped default (`socket_families:
//! [unix, inet, inet6, netlink]`) any other family is refused at
//! socket_create with EPERM and an event; the listed ones work; a policy
//! that lists a family lets it through to the kernel. VM only (LSM).
use std::{io, time::Duration};

use vzhost_tests::{Daemon, lsm_available};

use crate::policy::within;

/// socket(family, type, 0), closed again.
fn open(family: i32, kind: i32) -> impl Fn() -> io::Result<()> + Send + Sync + 'static {
    move || {
        // SAFETY: socket(2) and close(2) on the fd it returned.
        let fd = unsafe { libc::socket(family, kind, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        unsafe { libc::close(fd) };
        Ok(())
    }
}

/// Families the default leaves out, which the VM's kernel knows.
const UNLISTED: [(&str, i32, i32); 3] = [
    ("AF_KEY", libc::AF_KEY, libc::SOCK_RAW),
    ("AF_ALG", libc::AF_ALG, libc::SOCK_SEQPACKET),
    ("AF_VSOCK", libc::AF_VSOCK, libc::SOCK_STREAM),
];

const LISTED: [(&str, i32, i32); 4] = [
    ("AF_UNIX", libc::AF_UNIX, libc::SOCK_STREAM),
    ("AF_INET", libc::AF_INET, libc::SOCK_DGRAM),
    ("AF_INET6", libc::AF_INET6, libc::SOCK_DGRAM),
    ("AF_NETLINK", libc::AF_NETLINK, libc::SOCK_RAW),
];

#[test]
fn socket_families_outside_the_allowlist_are_refused() -> anyhow::Result<()> {
    if !lsm_available("lsm::sockets::socket_families_outside_the_allowlist_are_refused") {
        return Ok(());
    }
    let d = Daemon::start("families")?;
    d.put_policy("wide.yaml",
        "selector:\n  names: [w]\nnetwork:\n  socket_families: [unix, inet, inet6, netlink, key, alg, vsock]\n",
    );
    d.ok(&["create", "a"]);
    d.ok(&["create", "w"]);
    within(Duration::from_secs(3), || {
        d.status("w").is_some_and(|s| s["policy"] == "wide")
    })
    .expect("the daemon picked the policy up");
    d.ok(&["start", "a"]);
    d.ok(&["start", "w"]);
    for (name, family, kind) in UNLISTED {
        let err = d
            .as_vps_root("a", open(family, kind))
            .expect_err("an unlisted family");
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{name}: {err}");
        // Listed, the family reaches the kernel (which may lack it).
        let wide = d.as_vps_root("w", open(family, kind));
        assert!(
            wide.as_ref()
                .map_or_else(|e| e.raw_os_error() != Some(libc::EPERM), |()| true),
            "{name} under a policy that lists it: {wide:?}"
        );
    }
    for (name, family, kind) in LISTED {
        d.as_vps_root("a", open(family, kind))
            .unwrap_or_else(|e| panic!("{name} is listed: {e}"));
    }
    let event = d.await_event("a", "socket_create").expect("an event");
    assert_eq!(event["rule"], "default:network.socket_families", "{event}");
    assert_eq!(event["verdict"], "denied", "{event}");
    Ok(())
}
