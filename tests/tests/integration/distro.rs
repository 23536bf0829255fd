//! Templates from distributions: the metadata of an imported Debian
//! template (the cached, prepared image; tests never run debootstrap),
//! imports that keep owners, modes, xattrs and device nodes, and a failed
//! `template create` that leaves nothing behind.
use std::{
    ffi::CString,
    fs,
    os::unix::{
        ffi::OsStrExt as _,
        fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    },
    path::Path,
    process::Command,
    time::Instant,
};

use vzhost_tests::{Daemon, debian_template};

fn templates(d: &Daemon) -> Vec<serde_json::Value> {
    serde_json::from_str(&d.ok(&["template", "list", "-o", "json"])).expect("template list json")
}

#[test]
fn template_list_shows_what_an_imported_debian_template_is() -> anyhow::Result<()> {
    let image = debian_template();
    let d = Daemon::start("distro-meta")?;
    let started = Instant::now();
    let imported: serde_json::Value = serde_json::from_str(&d.ok(&[
        "template",
        "import",
        "deb",
        image.to_str().expect("UTF-8 path"),
        "-o",
        "json",
    ]))?;
    eprintln!(
        "import of the prepared Debian template: {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let listed = templates(&d);
    let deb = listed
        .iter()
        .find(|t| t["name"] == "deb")
        .expect("deb is listed");
    assert_eq!(deb, &imported, "import answers what list shows");
    let meta = &deb["meta"];
    assert_eq!(meta["distribution"], "debian", "{meta}");
    assert_eq!(meta["release"], "12", "{meta}");
    assert_eq!(meta["codename"], "bookworm", "{meta}");
    assert_eq!(meta["init"], "systemd", "{meta}");
    assert!(
        meta["hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("sha256:") && h.len() == 71),
        "{meta}"
    );
    let size = meta["size"].as_u64().unwrap_or(0);
    assert!((50 << 20..1 << 30).contains(&size), "size {size}: {meta}");
    assert!(
        meta["created"].as_u64().unwrap_or(0) > 1_700_000_000,
        "{meta}"
    );
    // Kept beside the template, root's alone.
    let kept = fs::metadata(d.root().join("templates/deb.meta.json"))?;
    assert_eq!(kept.permissions().mode() & 0o777, 0o600);

    let table = d.ok(&["template", "list"]);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("deb "))
        .expect("a row for deb")
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["deb", "debian", "12", "systemd"], "{table}");

    // A second import of the same tree hashes alike.
    d.ok(&[
        "template",
        "import",
        "deb2",
        image.to_str().expect("UTF-8 path"),
    ]);
    let again = templates(&d);
    let deb2 = again.iter().find(|t| t["name"] == "deb2").expect("deb2");
    assert_eq!(deb2["meta"]["hash"], meta["hash"]);
    Ok(())
}

/// `security.capability` as setcap writes it: revision 2, effective,
/// CAP_NET_BIND_SERVICE permitted.
const FILE_CAPS: [u8; 20] = [
    1, 0, 0, 2, // magic: VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    0, 4, 0, 0, // permitted[0]: 1 << 10
    0, 0, 0, 0, // inheritable[0]
    0, 0, 0, 0, // permitted[1]
    0, 0, 0, 0, // inheritable[1]
];
const USER_XATTR: (&str, &[u8]) = ("user.vzhost", b"kept");

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a path")
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let (p, n) = (cpath(path), CString::new(name).expect("no NUL"));
    // SAFETY: the strings are NUL-terminated and the value buffer is valid
    // for its length for the duration of the call.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let (p, n) = (cpath(path), CString::new(name).expect("no NUL"));
    let mut buf = vec![0u8; 256];
    // SAFETY: as above; the kernel writes at most buf.len() bytes.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(len).ok().map(|len| buf[..len].to_vec())
}

/// A small root filesystem with what a naive copy loses: a setuid file of
/// another owner with a user xattr and file capabilities, a char device.
fn tricky_tree(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir.join("bin"))?;
    fs::create_dir_all(dir.join("dev"))?;
    fs::write(dir.join("bin/sh"), "#!fake")?;
    let tool = dir.join("bin/tool");
    fs::write(&tool, "tool")?;
    std::os::unix::fs::chown(&tool, Some(1000), Some(1000))?;
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o4750))?;
    set_xattr(&tool, USER_XATTR.0, USER_XATTR.1)?;
    set_xattr(&tool, "security.capability", &FILE_CAPS)?;
    nix::sys::stat::mknod(
        &dir.join("dev/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )?;
    Ok(())
}

fn assert_kept(template: &Path) {
    let tool = template.join("bin/tool");
    let m = fs::symlink_metadata(&tool).expect("bin/tool imported");
    assert_eq!(
        (m.uid(), m.gid()),
        (1000, 1000),
        "owner of {}",
        tool.display()
    );
    assert_eq!(m.mode() & 0o7777, 0o4750, "mode of {}", tool.display());
    assert_eq!(
        get_xattr(&tool, USER_XATTR.0).as_deref(),
        Some(USER_XATTR.1),
        "user xattr of {}",
        tool.display()
    );
    assert_eq!(
        get_xattr(&tool, "security.capability").as_deref(),
        Some(&FILE_CAPS[..]),
        "file capabilities of {}",
        tool.display()
    );
    let null = fs::symlink_metadata(template.join("dev/null")).expect("dev/null imported");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
}

#[test]
fn import_keeps_owners_modes_xattrs_and_device_nodes() -> anyhow::Result<()> {
    let d = Daemon::start("distro-fidelity")?;
    let src = d.state.path().join("tricky");
    tricky_tree(&src)?;
    // The source itself must hold them, or the test proves nothing.
    assert_kept(&src);
    d.ok(&[
        "template",
        "import",
        "from-dir",
        src.to_str().expect("UTF-8"),
    ]);
    assert_kept(&d.root().join("templates/from-dir"));

    let tar = d.state.path().join("tricky.tar");
    let made = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-cpf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()?;
    anyhow::ensure!(made.success(), "tar of the tricky tree failed");
    d.ok(&[
        "template",
        "import",
        "from-tar",
        tar.to_str().expect("UTF-8"),
    ]);
    assert_kept(&d.root().join("templates/from-tar"));
    Ok(())
}

#[test]
fn a_failed_template_create_says_why_and_leaves_nothing() -> anyhow::Result<()> {
    let d = Daemon::start("distro-fail")?;
    let out = d.vz(&[
        "template",
        "create",
        "debian",
        "--release",
        "no-such-release",
        "nope",
    ])?;
    let err = vzhost_tests::stderr(&out);
    // The VM carries no debootstrap: there the failure names the fix.
    if Path::new("/usr/share/debootstrap/scripts").is_dir() {
        assert_eq!(out.status.code(), Some(5), "invalid: {err}");
        assert!(
            err.contains("unknown Debian release \"no-such-release\"") && err.contains("--release"),
            "{err}"
        );
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("install debootstrap (cargo xtask setup)"),
            "{err}"
        );
    }
    // Refused by the client before the daemon is asked.
    let err = d.fails(&["template", "create", "debian", "--packages=curl,-k/x"]);
    assert!(err.contains("invalid --packages \"-k/x\""), "{err}");
    assert!(!templates(&d).iter().any(|t| t["name"] == "nope"));
    let left: Vec<String> = fs::read_dir(d.root().join("templates"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    assert!(
        left.iter()
            .all(|n| !n.starts_with(".new-") && !n.starts_with("nope")),
        "{left:?}"
    );
    Ok(())
}
