//! A VPS's init: which kind it is (to know how to ask it to stop).
use crate::{enforce::VpsRoot, model::InitKind};

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
