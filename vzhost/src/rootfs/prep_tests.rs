use std::os::unix::fs::symlink;

use super::*;

/// A small tree shaped like debootstrap's output: merged /usr (so /lib is
/// a symlink), host identity, keys, caches and docs.
fn debootstrapped() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    for d in [
        "etc/ssh/sshd_config.d",
        "etc/network/interfaces.d",
        "etc/systemd/system/getty.target.wants",
        "usr/lib/systemd/system",
        "usr/share/doc/bash/examples",
        "usr/share/man/man1",
        "usr/share/locale/de/LC_MESSAGES",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/log/apt",
    ] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    symlink("usr/lib", r.join("lib")).unwrap();
    for (f, text) in [
        ("etc/hostname", "buildhost\n"),
        ("etc/resolv.conf", "nameserver 10.255.255.53\n"),
        ("etc/machine-id", "0123456789abcdef0123456789abcdef\n"),
        (
            "etc/ssh/sshd_config",
            "Include /etc/ssh/sshd_config.d/*.conf\n",
        ),
        ("etc/ssh/ssh_host_ed25519_key", "secret"),
        ("etc/ssh/ssh_host_ed25519_key.pub", "public"),
        ("etc/ssh/moduli", "moduli"),
        (
            "etc/network/interfaces",
            "auto eth0\niface eth0 inet dhcp\n",
        ),
        ("usr/lib/systemd/system/ssh.service", "[Service]\n"),
        ("usr/share/doc/bash/copyright", "GPL"),
        ("usr/share/doc/bash/README", "read me"),
        ("usr/share/doc/bash/examples/x", "x"),
        ("usr/share/man/man1/bash.1.gz", "man"),
        ("usr/share/locale/de/LC_MESSAGES/bash.mo", "mo"),
        ("usr/share/locale/locale.alias", "alias"),
        (
            "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
            "x",
        ),
        ("var/lib/apt/lists/lock", ""),
        ("var/cache/apt/pkgcache.bin", "x"),
        ("var/cache/apt/archives/bash_5.2.deb", "x"),
        ("var/log/bootstrap.log", "x"),
        ("var/log/apt/history.log", "x"),
    ] {
        fs::write(r.join(f), text).unwrap();
    }
    symlink(
        "/lib/systemd/system/getty@.service",
        r.join("etc/systemd/system/getty.target.wants/getty@tty1.service"),
    )
    .unwrap();
    tmp
}

fn read(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel)).unwrap()
}

fn names(root: &Path, rel: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn the_host_identity_goes_and_each_vps_gets_its_own() {
    let tmp = debootstrapped();
    let r = tmp.path();
    prepare(r).unwrap();
    let id = fs::metadata(r.join("etc/machine-id")).unwrap();
    assert_eq!((id.len(), id.permissions().mode() & 0o777), (0, 0o444));
    assert_eq!(read(r, "etc/hostname"), "localhost\n");
    assert!(
        !read(r, "etc/resolv.conf")
            .lines()
            .any(|l| l.starts_with("nameserver"))
    );
    assert!(read(r, "etc/hosts").starts_with("127.0.0.1\tlocalhost\n"));
    assert_eq!(
        names(r, "etc/ssh"),
        ["moduli", "sshd_config", "sshd_config.d"]
    );
    assert!(read(r, "etc/ssh/sshd_config.d/vzhost.conf").contains("\nPermitRootLogin yes\n"));
    // Keys are made before the unit's own `sshd -t`, which needs them.
    let dropin = read(r, "etc/systemd/system/ssh.service.d/vzhost-host-keys.conf");
    let pre: Vec<&str> = dropin
        .lines()
        .filter(|l| l.starts_with("ExecStartPre="))
        .collect();
    assert_eq!(
        pre,
        [
            "ExecStartPre=",
            "ExecStartPre=/usr/bin/ssh-keygen -A",
            "ExecStartPre=/usr/sbin/sshd -t"
        ]
    );
}

#[test]
fn only_the_loopback_is_configured_and_vps_hostile_units_are_masked() {
    let tmp = debootstrapped();
    let r = tmp.path();
    prepare(r).unwrap();
    let ifaces = read(r, "etc/network/interfaces");
    assert!(ifaces.contains("iface lo inet loopback"));
    assert!(!ifaces.contains("eth0 inet"));
    for unit in [
        "sys-kernel-debug.mount",
        "sys-kernel-tracing.mount",
        "sys-kernel-config.mount",
        "sys-fs-fuse-connections.mount",
        "getty@.service",
        "systemd-udevd.service",
        "systemd-firstboot.service",
    ] {
        let link = r.join("etc/systemd/system").join(unit);
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("/dev/null"),
            "{unit}"
        );
    }
    assert!(
        !r.join("etc/systemd/system/console-getty.service").exists(),
        "the console's getty stays"
    );
    assert!(read(r, "etc/systemd/system-preset/00-vzhost.preset").contains("\ndisable *\n"));
}

#[test]
fn caches_lists_logs_and_docs_go_but_copyrights_and_apt_dirs_stay() {
    let tmp = debootstrapped();
    let r = tmp.path();
    prepare(r).unwrap();
    assert_eq!(names(r, "var/lib/apt/lists"), ["lock", "partial"]);
    assert_eq!(names(r, "var/cache/apt"), ["archives"]);
    assert_eq!(names(r, "var/cache/apt/archives"), ["partial"]);
    assert_eq!(names(r, "usr/share/doc/bash"), ["copyright"]);
    assert!(names(r, "usr/share/man").is_empty());
    assert_eq!(names(r, "usr/share/locale"), ["locale.alias"]);
    assert!(!r.join("var/log/bootstrap.log").exists());
    assert!(!r.join("var/log/apt/history.log").exists());
    // Prepared twice is prepared once.
    prepare(r).unwrap();
    assert_eq!(read(r, "etc/hostname"), "localhost\n");
}

#[test]
fn nothing_is_written_through_a_symlink_out_of_the_tree() {
    let tmp = debootstrapped();
    let r = tmp.path();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("hostname"), "precious\n").unwrap();
    fs::create_dir(outside.path().join("ssh")).unwrap();
    fs::write(outside.path().join("ssh/ssh_host_rsa_key"), "precious").unwrap();
    // A file symlink is replaced, never written through.
    fs::remove_file(r.join("etc/hostname")).unwrap();
    symlink(outside.path().join("hostname"), r.join("etc/hostname")).unwrap();
    prepare(r).unwrap();
    assert_eq!(
        fs::read_to_string(outside.path().join("hostname")).unwrap(),
        "precious\n"
    );
    assert!(!r.join("etc/hostname").is_symlink());
    // A directory symlink on the way is refused.
    fs::remove_dir_all(r.join("etc/ssh")).unwrap();
    symlink(outside.path().join("ssh"), r.join("etc/ssh")).unwrap();
    let err = prepare(r).unwrap_err();
    assert!(matches!(err, PrepError::Symlink { .. }), "{err}");
    assert!(outside.path().join("ssh/ssh_host_rsa_key").exists());
    assert!(!outside.path().join("ssh/sshd_config.d").exists());
}

#[test]
fn a_directory_without_etc_is_no_root_filesystem() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(prepare(tmp.path()), Err(PrepError::NotRoot(_))));
}
