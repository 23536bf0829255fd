//! Namespaces: starting a VPS's PID 1 in its own user, mount, PID, UTS,
//! IPC, network and cgroup namespaces (`launch`), and running a command
//! inside a running VPS (`attach`). Both run in short-lived helper
//! processes (`vzhost __launch`, `vzhost __attach`; see [`helper`]), never
//! in the multi-threaded daemon, so fork is safe and the VPS never depends
//! on the daemon's process.
pub mod attach;
pub mod console;
mod console_relay;
pub mod helper;
pub mod launch;
mod phases;

pub use phases::Phases;

use std::{io::Write as _, path::Path};

/// Join the cgroups whose `cgroup.procs` files are given.
pub(crate) fn join_cgroups(procs: &[impl AsRef<Path>]) -> std::io::Result<()> {
    move_to_cgroups("0", procs)
}

/// Move process `pid` ("0": this one) into the cgroups whose
/// `cgroup.procs` files are given.
fn move_to_cgroups(pid: &str, procs: &[impl AsRef<Path>]) -> std::io::Result<()> {
    for p in procs {
        let p = p.as_ref();
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .and_then(|mut f| f.write_all(pid.as_bytes()))
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("join cgroup {}: {e}", p.display()))
            })?;
    }
    Ok(())
}

/// After entering a VPS's user namespace: become its root (host ids of
/// its range), with no supplementary groups.
pub(crate) fn become_vps_root() -> nix::Result<()> {
    use nix::unistd::{Gid, Uid};
    nix::unistd::setgroups(&[])?;
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
}

/// The first cgroup migration in a while waits for an RCU grace period
/// (the kernel's cgroup_threadgroup_rwsem), several ms, and a migration
/// within a grace period of another one does not. A thread "moves" the
/// daemon into the v2 cgroup it is already in (a no-op that takes that
/// lock), so the wait runs while a start makes the VPS's cgroups and
/// admits it, or while an attach helper starts, and the helper's joins
/// that follow share it.
pub fn prime_cgroup_migration() {
    std::thread::spawn(|| {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|text| crate::cgroup::Membership::parse(&text));
        let layout = crate::cgroup::Layout::detect();
        if let (Some(own), Ok(layout)) = (own, layout)
            && let Ok(root) = layout.unified_root()
        {
            let procs = root
                .join(own.v2.trim_start_matches('/'))
                .join("cgroup.procs");
            // Failure only means no head start.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .open(procs)
                .and_then(|mut f| f.write_all(b"0"));
        }
    });
}
