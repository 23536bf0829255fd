use std::os::unix::fs::{PermissionsExt as _, symlink};

use super::*;

const BOOKWORM: &str = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"#;

#[test]
fn os_release_fields_are_read_quoted_or_not() {
    assert_eq!(
        parse_os_release(BOOKWORM),
        OsRelease {
            id: Some("debian".into()),
            version_id: Some("12".into()),
            codename: Some("bookworm".into()),
        }
    );
    let sid = parse_os_release("ID='debian'\n# c\nVERSION_CODENAME=\ngarbage\n");
    assert_eq!(sid.id.as_deref(), Some("debian"));
    assert_eq!((sid.version_id, sid.codename), (None, None));
}

#[test]
fn init_is_named_by_the_program_sbin_init_leads_to() {
    assert_eq!(Init::of_program("systemd"), Init::Systemd);
    assert_eq!(Init::of_program("busybox"), Init::Busybox);
    assert_eq!(Init::of_program("init"), Init::Sysvinit);
    assert_eq!(Init::of_program("runit-init"), Init::Unknown);
}

/// A merged-/usr Debian-like tree: every name is a symlink chain, some
/// absolute, which must resolve inside the tree.
fn debian_like() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    for d in ["etc", "usr/lib/systemd", "usr/sbin"] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    fs::write(r.join("usr/lib/os-release"), BOOKWORM).unwrap();
    symlink("../usr/lib/os-release", r.join("etc/os-release")).unwrap();
    fs::write(r.join("usr/lib/systemd/systemd"), "ELF").unwrap();
    symlink("/lib/systemd/systemd", r.join("usr/sbin/init")).unwrap();
    symlink("usr/lib", r.join("lib")).unwrap();
    symlink("usr/sbin", r.join("sbin")).unwrap();
    tmp
}

#[test]
fn a_debian_tree_is_detected_through_its_own_symlinks() {
    let tmp = debian_like();
    let m = detect(tmp.path(), 7).unwrap();
    assert_eq!(
        (
            m.distribution.as_str(),
            m.release.as_str(),
            m.codename.as_deref()
        ),
        ("debian", "12", Some("bookworm"))
    );
    assert_eq!((m.init, m.created), (Init::Systemd, 7));
    assert!(
        m.hash.starts_with("sha256:") && m.hash.len() == 7 + 64,
        "{}",
        m.hash
    );
    assert!(m.size > 0);
}

#[test]
fn symlinks_out_of_the_tree_lead_nowhere() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("os-release"), "ID=host\n").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    fs::create_dir_all(r.join("etc")).unwrap();
    fs::create_dir_all(r.join("bin")).unwrap();
    // Absolute and `..`-climbing links are resolved inside the tree.
    let up = format!("../../../../../../..{}", outside.path().display());
    symlink(format!("{up}/os-release"), r.join("etc/os-release")).unwrap();
    fs::write(r.join("bin/busybox"), "ELF").unwrap();
    fs::create_dir(r.join("sbin")).unwrap();
    symlink("/bin/busybox", r.join("sbin/init")).unwrap();
    let m = detect(r, 1).unwrap();
    assert_eq!(
        (m.distribution.as_str(), m.init),
        ("busybox", Init::Busybox)
    );
    assert_eq!(m.release, "unknown");
}

#[test]
fn the_hash_follows_content_modes_and_links_but_not_times() {
    let tmp = debian_like();
    let r = tmp.path();
    let (first, _) = content_hash(r).unwrap();
    let copy = tempfile::tempdir().unwrap();
    assert!(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(r.join("."))
            .arg(copy.path())
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(std::time::Duration::from_millis(10));
    fs::write(copy.path().join("usr/lib/systemd/systemd"), "ELF").unwrap();
    assert_eq!(content_hash(copy.path()).unwrap().0, first, "same tree");
    fs::write(copy.path().join("usr/lib/systemd/systemd"), "ELF2").unwrap();
    let (changed, _) = content_hash(copy.path()).unwrap();
    assert_ne!(changed, first, "content");
    fs::write(copy.path().join("usr/lib/systemd/systemd"), "ELF").unwrap();
    fs::set_permissions(
        copy.path().join("usr/lib/systemd/systemd"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    assert_ne!(content_hash(copy.path()).unwrap().0, first, "mode");
    fs::set_permissions(
        copy.path().join("usr/lib/systemd/systemd"),
        fs::Permissions::from_mode(
            fs::metadata(r.join("usr/lib/systemd/systemd"))
                .unwrap()
                .permissions()
                .mode(),
        ),
    )
    .unwrap();
    fs::remove_file(copy.path().join("sbin")).unwrap();
    symlink("usr/bin", copy.path().join("sbin")).unwrap();
    assert_ne!(content_hash(copy.path()).unwrap().0, first, "link target");
}

#[test]
fn metadata_round_trips_privately() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.meta.json");
    assert_eq!(load(&path).unwrap(), None);
    let m = detect(debian_like().path(), 3).unwrap();
    save(&path, &m).unwrap();
    assert_eq!(load(&path).unwrap(), Some(m));
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    fs::write(&path, "{").unwrap();
    assert!(matches!(load(&path), Err(MetaError::Corrupt { .. })));
}
