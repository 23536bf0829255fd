//! A VPS's init: which kind it is (to know how to ask it to stop), and
//! the machine-id it finds, the VPS's own rather than its template's.
use std::io::Read as _;

use crate::{
    enforce::VpsRoot,
    model::{IdMap, InitKind},
    rootfs::safe::{Owner, SafeDir, SafeError},
};

/// Where systemd lives, with and without a merged /usr.
const SYSTEMD: &[&str] = &["/usr/lib/systemd/systemd", "/lib/systemd/systemd"];

/// The kind of the init in `root`: systemd when /sbin/init is (through
/// whatever links, resolved inside the root) the systemd binary itself.
pub(super) fn kind_in(root: &VpsRoot) -> InitKind {
    let Ok(init) = root.stat("/sbin/init") else {
        return InitKind::Plain;
    };
    if SYSTEMD
        .iter()
        .any(|p| root.stat(p).is_ok_and(|s| s == init))
    {
        InitKind::Systemd
    } else {
        InitKind::Plain
    }
}

/// A new random machine-id: 32 lowercase hex digits and a newline, as
/// machine-id(5) says.
fn new_machine_id() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{hex}\n"))
}

/// Write a new machine-id into `etc` (a VPS's upper /etc), owned by the
/// VPS's root `root`, read-only as systemd keeps it.
pub(super) fn write_machine_id(etc: &SafeDir, root: u32) -> Result<(), SafeError> {
    let id = new_machine_id().map_err(|source| SafeError::Io {
        action: "make a machine-id for",
        path: "/etc/machine-id".into(),
        source,
    })?;
    let owner = Owner {
        uid: root,
        gid: root,
        mode: 0o444,
    };
    etc.write("machine-id", id.as_bytes(), owner)
}

/// Give the VPS whose upper layer is `upper` a machine-id of its own
/// unless its layer has one (or the VPS removed it): VPSs made before
/// vzhost wrote one at create get theirs at their next start.
pub(super) fn ensure_machine_id(upper: &std::path::Path, ids: IdMap) -> Result<bool, SafeError> {
    let layer = SafeDir::open(upper, Some(ids))?;
    if layer.lstat("etc/machine-id")?.is_some() {
        return Ok(false);
    }
    let etc = layer.make_dir(
        "etc",
        Owner {
            uid: ids.base,
            gid: ids.base,
            mode: 0o755,
        },
    )?;
    write_machine_id(&etc, ids.base)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::symlink};

    use super::*;

    fn root_with(links: &[(&str, &str)]) -> (tempfile::TempDir, VpsRoot) {
        let dir = tempfile::tempdir().unwrap();
        for d in ["usr/lib/systemd", "usr/sbin", "bin"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        fs::write(dir.path().join("usr/lib/systemd/systemd"), "").unwrap();
        fs::write(dir.path().join("bin/busybox"), "").unwrap();
        for (link, target) in links {
            symlink(target, dir.path().join(link)).unwrap();
        }
        let root = VpsRoot::of_dir(dir.path()).unwrap();
        (dir, root)
    }

    fn own_ids() -> IdMap {
        IdMap {
            base: nix::unistd::getuid().as_raw(),
            count: 1,
        }
    }

    #[test]
    fn a_layer_without_a_machine_id_gets_a_random_one_once() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure_machine_id(dir.path(), own_ids()).unwrap());
        let id = fs::read_to_string(dir.path().join("etc/machine-id")).unwrap();
        assert_eq!(id.len(), 33, "{id:?}");
        assert!(id.trim_end().chars().all(|c| c.is_ascii_hexdigit()));
        // Kept from then on.
        assert!(!ensure_machine_id(dir.path(), own_ids()).unwrap());
        assert_eq!(
            fs::read_to_string(dir.path().join("etc/machine-id")).unwrap(),
            id
        );
        let other = tempfile::tempdir().unwrap();
        ensure_machine_id(other.path(), own_ids()).unwrap();
        assert_ne!(
            fs::read_to_string(other.path().join("etc/machine-id")).unwrap(),
            id
        );
    }

    #[test]
    fn a_symlinked_etc_in_the_layer_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        symlink(host.path(), dir.path().join("etc")).unwrap();
        assert!(ensure_machine_id(dir.path(), own_ids()).is_err());
        assert!(!host.path().join("machine-id").exists());
    }

    #[test]
    fn debians_merged_usr_links_lead_to_systemd() {
        let (_d, root) = root_with(&[
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("usr/sbin/init", "../lib/systemd/systemd"),
        ]);
        assert_eq!(kind_in(&root), InitKind::Systemd);
    }

    #[test]
    fn busybox_or_a_missing_init_is_plain() {
        let (_d, root) = root_with(&[("sbin", "bin"), ("bin/init", "busybox")]);
        assert_eq!(kind_in(&root), InitKind::Plain);
        let (_d, root) = root_with(&[]);
        assert_eq!(kind_in(&root), InitKind::Plain);
    }

    #[test]
    fn a_link_out_of_the_root_resolves_inside_it() {
        // An absolute link names the VPS's own systemd, never the host's.
        let (_d, root) = root_with(&[("sbin", "/usr/sbin"), ("usr/sbin/init", "/bin/busybox")]);
        assert_eq!(kind_in(&root), InitKind::Plain);
    }
}
