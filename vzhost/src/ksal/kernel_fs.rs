//! The pseudo-filesystems KSAL needs: securityfs (to read the active LSM
//! list) and bpffs (for pins). A fresh host may have neither mounted.
use std::path::Path;

pub const SECURITYFS: &str = "/sys/kernel/security";
pub const BPFFS: &str = "/sys/fs/bpf";

/// Whether a filesystem of type `fstype` is mounted exactly at `target`.
pub fn is_mounted(target: &str, fstype: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| mounted_in(&info, target, fstype))
        .unwrap_or(false)
}

fn mounted_in(mountinfo: &str, target: &str, fstype: &str) -> bool {
    mountinfo.lines().any(|line| {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            return false;
        };
        left.split(' ').nth(4) == Some(target) && right.split(' ').next() == Some(fstype)
    })
}

/// Mount `fstype` at `target` unless it already is. Returns whether it
/// mounted something.
pub fn ensure_mounted(target: &str, fstype: &str) -> std::io::Result<bool> {
    if is_mounted(target, fstype) {
        return Ok(false);
    }
    if !Path::new(target).is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{target} does not exist; the kernel lacks {fstype} support"),
        ));
    }
    nix::mount::mount(
        Some(fstype),
        target,
        Some(fstype),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| std::io::Error::other(format!("mount -t {fstype} {target}: {e}")))?;
    Ok(true)
}

/// The active LSMs, from securityfs (mounted first if needed).
pub fn active_lsms() -> std::io::Result<Vec<String>> {
    ensure_mounted(SECURITYFS, "securityfs")?;
    let list = std::fs::read_to_string(Path::new(SECURITYFS).join("lsm"))?;
    Ok(list.trim().split(',').map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
30 22 0:26 / /sys/fs/bpf rw,relatime shared:9 - bpf bpf rw
31 22 0:7 / /sys/kernel/security rw - securityfs securityfs rw";

    #[test]
    fn finds_mounts_by_target_and_type() {
        assert!(mounted_in(SAMPLE, "/sys/fs/bpf", "bpf"));
        assert!(mounted_in(SAMPLE, "/sys/kernel/security", "securityfs"));
        assert!(!mounted_in(SAMPLE, "/sys/fs/bpf", "tmpfs"));
        assert!(!mounted_in(SAMPLE, "/sys/fs/cgroup", "cgroup2"));
    }
}
