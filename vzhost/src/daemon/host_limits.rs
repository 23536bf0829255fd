//! Host-wide kernel limits that many VPSs share. Every VPS's user
//! namespace is created by host root, and the kernel charges some
//! per-user counts to the creator in the parent namespace too: all VPSs
//! together draw on host root's `fs.inotify.max_user_instances` (128 by
//! default), and each systemd takes several, so the 23rd Debian VPS on a
//! stock host fails to boot ("Failed to create control group inotify
//! object: Too many open files"). The daemon raises such limits to the
//! floors below when it starts (never lowers them), as Incus's production
//! setup advises; what one VPS may really use is bounded by its memory
//! limit (inotify objects are charged to its memory cgroup).
use std::path::Path;

/// (sysctl under /proc/sys, the least value a VPS host needs).
pub const FLOORS: &[(&str, u64)] = &[
    ("fs/inotify/max_user_instances", 1 << 20),
    ("fs/inotify/max_user_watches", 1 << 20),
    ("fs/inotify/max_queued_events", 1 << 20),
];

/// The value to write for a limit now at `current`, if it is below `floor`.
pub fn raised(current: &str, floor: u64) -> Option<u64> {
    match current.trim().parse::<u64>() {
        Ok(now) if now >= floor => None,
        _ => Some(floor),
    }
}

/// Raise every limit of [`FLOORS`] under `proc_sys` that is below its
/// floor; each change and each failure is logged, none stops the daemon.
pub fn raise(proc_sys: &Path) {
    for (name, floor) in FLOORS {
        let path = proc_sys.join(name);
        let Ok(current) = std::fs::read_to_string(&path) else {
            tracing::debug!(sysctl = name, "not on this kernel");
            continue;
        };
        if let Some(value) = raised(&current, *floor) {
            match std::fs::write(&path, value.to_string()) {
                Ok(()) => tracing::info!(
                    sysctl = name,
                    from = current.trim(),
                    to = value,
                    "raised a host limit for many VPSs"
                ),
                Err(e) => tracing::warn!(
                    sysctl = name,
                    now = current.trim(),
                    want = value,
                    "cannot raise a host limit; VPSs may fail to boot past a few dozen: {e}"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_raised_to_their_floor_and_never_lowered() {
        assert_eq!(raised("128\n", 1 << 20), Some(1 << 20));
        assert_eq!(raised("2097152\n", 1 << 20), None);
        assert_eq!(raised("1048576", 1 << 20), None);
        assert_eq!(raised("garbage", 8), Some(8), "an unreadable value is set");
    }

    #[test]
    fn raise_writes_only_what_is_below() {
        let dir = tempfile::tempdir().unwrap();
        let inotify = dir.path().join("fs/inotify");
        std::fs::create_dir_all(&inotify).unwrap();
        std::fs::write(inotify.join("max_user_instances"), "128\n").unwrap();
        std::fs::write(inotify.join("max_user_watches"), "4194304\n").unwrap();
        raise(dir.path());
        let read = |f: &str| std::fs::read_to_string(inotify.join(f)).unwrap();
        assert_eq!(read("max_user_instances"), "1048576");
        assert_eq!(read("max_user_watches"), "4194304\n", "left alone");
        assert!(
            !inotify.join("max_queued_events").exists(),
            "absent: not made"
        );
    }
}
