//! File write rules on every path to a file's content or name, mount rules
//! on every mount API, and file rules resolved in the root captured at
//! launch: each attacked from inside a VPS as its root, denied with EPERM
//! and an event naming the rule, the file unchanged as the host sees it;
//! the same actions on a file no rule covers go through.
use std::{
    ffi::CString,
    fs, io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    time::{Duration, Instant},
};

use vzhost_tests::{Daemon, lsm_available, stderr};

const POLICY: &str = "mode: enforce
allow_degraded: false
files:
  deny:
    - path: /etc/guarded
      access: [write]
mounts:
  allow_types: [tmpfs]
  remount_read_only: true
";
const RULE: &str = "default:files.deny[0]";

fn errno(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// Run `work` as root of VPS `vps` inside its mount namespace as well, so
/// paths name the VPS's files.
fn in_vps(d: &Daemon, vps: &str, work: fn() -> io::Result<()>) -> io::Result<()> {
    let pid = init_pid(d, vps);
    let mnt = fs::File::open(format!("/proc/{pid}/ns/mnt"))?;
    let fd = mnt.as_raw_fd();
    let r = d.as_vps_root(vps, move || {
        // SAFETY: an fd the parent keeps open across the fork.
        errno(unsafe { libc::setns(fd, libc::CLONE_NEWNS) }.into())?;
        work()
    });
    drop(mnt);
    r
}

fn init_pid(d: &Daemon, vps: &str) -> u64 {
    d.status(vps).expect("exists")["init_pid"]
        .as_u64()
        .expect("runs")
}

/// Content and inode number of `path` in VPS `vps`, read from the host.
fn snapshot(d: &Daemon, vps: &str, path: &str) -> (String, u64) {
    let host = format!("/proc/{}/root{path}", init_pid(d, vps));
    let meta = fs::metadata(&host).unwrap_or_else(|e| panic!("{host}: {e}"));
    (fs::read_to_string(&host).unwrap(), meta.ino())
}

fn expect_event(d: &Daemon, vps: &str, hook: &str, rule: &str) {
    let e = d
        .await_event(vps, hook)
        .unwrap_or_else(|| panic!("no {hook} event: {:?}", d.events(vps)));
    assert_eq!(
        (e["verdict"].as_str(), e["rule"].as_str()),
        (Some("denied"), Some(rule)),
        "{e}"
    );
    assert_eq!(e["vps"], vps, "{e}");
}

/// Daemon with VPS `a` running, `files` made in it, then POLICY in force.
fn setup(name: &str, files: &str) -> anyhow::Result<Daemon> {
    let d = Daemon::start(name)?;
    d.ok(&["create", "a"]);
    d.ok(&["start", "a"]);
    d.sh_ok("a", files);
    put_policy_in_force(&d, "a")?;
    Ok(d)
}

/// Write POLICY and wait until it holds /etc/guarded in `vps`.
fn put_policy_in_force(d: &Daemon, vps: &str) -> anyhow::Result<()> {
    fs::create_dir_all(d.policies())?;
    fs::write(d.policies().join("default.yaml"), POLICY)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_vps(d, vps, || open_write("/etc/guarded")).is_ok() {
        anyhow::ensure!(Instant::now() < deadline, "the policy was never applied");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn open_write(path: &str) -> io::Result<()> {
    let p = cstr(path);
    // SAFETY: a valid path; the fd is closed again.
    let fd = errno(unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_APPEND) }.into())?;
    // SAFETY: our own fd.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

fn truncate_guarded() -> io::Result<()> {
    let p = cstr("/etc/guarded");
    // SAFETY: a valid path.
    errno(unsafe { libc::truncate(p.as_ptr(), 0) }.into()).map(drop)
}

/// open(O_RDONLY | O_TRUNC): the kernel truncates though the file is open
/// for reading only, so file_open's write check never sees it.
fn open_rdonly_trunc() -> io::Result<()> {
    let p = cstr("/etc/guarded");
    // SAFETY: a valid path; the fd is closed again.
    let fd = errno(unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_TRUNC) }.into())?;
    // SAFETY: our own fd.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

fn setxattr_guarded() -> io::Result<()> {
    let (p, n) = (cstr("/etc/guarded"), cstr("user.vzhost"));
    // SAFETY: valid strings and a 1-byte value.
    errno(unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), b"x".as_ptr().cast(), 1, 0) }.into())
        .map(drop)
}

fn denied(r: io::Result<()>, what: &str) {
    let e = r.expect_err(&format!("{what}: succeeded inside the VPS"));
    println!("inside a, as root: {what}: {e}");
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{what}: {e}");
}

#[test]
fn write_rules_hold_on_every_path_to_a_files_content_or_name() -> anyhow::Result<()> {
    if !lsm_available("write_rules_hold_on_every_path_to_a_files_content_or_name") {
        return Ok(());
    }
    let d = setup(
        "swap",
        "echo real >/etc/guarded && echo decoy >/tmp/decoy && echo free >/tmp/free",
    )?;
    let before = snapshot(&d, "a", "/etc/guarded");
    type Call = (&'static str, fn() -> io::Result<()>, &'static str);
    let calls: [Call; 3] = [
        ("truncate(2)", truncate_guarded, "inode_setattr"),
        ("open(O_RDONLY|O_TRUNC)", open_rdonly_trunc, "inode_setattr"),
        ("setxattr(2)", setxattr_guarded, "inode_setxattr"),
    ];
    for (what, call, hook) in calls {
        denied(in_vps(&d, "a", call), what);
        expect_event(&d, "a", hook, RULE);
    }
    for (what, script, hook) in [
        (
            "mv a decoy over it",
            "mv /tmp/decoy /etc/guarded",
            "inode_rename",
        ),
        ("mv it away", "mv /etc/guarded /tmp/away", "inode_rename"),
        ("rm", "rm -f /etc/guarded", "inode_unlink"),
        ("ln", "ln /etc/guarded /tmp/hard", "inode_link"),
        ("chmod", "chmod 666 /etc/guarded", "inode_setattr"),
        ("mv its directory away", "mv /etc /etc.old", "inode_rename"),
        (
            "bind a decoy over it",
            "mount --bind /tmp/decoy /etc/guarded",
            "sb_mount",
        ),
        (
            "bind a decoy over its directory",
            "mkdir -p /tmp/e && mount --bind /tmp/e /etc",
            "sb_mount",
        ),
    ] {
        let out = d.sh("a", script);
        println!("inside a: {what}: {}", stderr(&out).trim());
        assert!(!out.status.success(), "{what}: succeeded inside a");
        // busybox mount says EPERM its own way.
        assert!(
            ["not permitted", "permission denied"]
                .iter()
                .any(|m| stderr(&out).contains(m)),
            "{what}: {}",
            stderr(&out)
        );
        expect_event(&d, "a", hook, RULE);
    }
    assert_eq!(
        snapshot(&d, "a", "/etc/guarded"),
        before,
        "content and inode as they were"
    );
    assert!(
        d.sh(
            "a",
            "test -e /tmp/hard || test -e /tmp/away || test -e /etc.old"
        )
        .status
        .code()
            == Some(1)
    );

    // The same on a file no rule covers.
    d.sh_ok(
        "a",
        ": >/tmp/free && chmod 666 /tmp/free && ln /tmp/free /tmp/free2 \
         && mv /tmp/decoy /tmp/free && rm /tmp/free2 && mkdir /tmp/m && mount --bind /tmp /tmp/m && umount /tmp/m",
    );
    Ok(())
}

const FSCONFIG_CMD_CREATE: libc::c_long = 6;
const OPEN_TREE_CLONE: libc::c_long = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_long = 4;

/// fsopen(`fstype`) + fsconfig(FSCONFIG_CMD_CREATE) + fsmount, then
/// move_mount onto /mnt/t and detach it again.
fn new_api_mount(fstype: &str) -> io::Result<()> {
    let t = cstr(fstype);
    // SAFETY: a valid string; the fds are ours and closed on exit.
    unsafe {
        let fc = errno(libc::syscall(libc::SYS_fsopen, t.as_ptr(), 0))?;
        errno(libc::syscall(
            libc::SYS_fsconfig,
            fc,
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        ))?;
        let mnt = errno(libc::syscall(libc::SYS_fsmount, fc, 0, 0))?;
        attach(mnt, "/mnt/t")?;
        errno(libc::umount2(c"/mnt/t".as_ptr(), libc::MNT_DETACH).into()).map(drop)
    }
}

/// move_mount of the detached mount `mnt` onto `target`.
fn attach(mnt: libc::c_long, target: &str) -> io::Result<()> {
    let t = cstr(target);
    // SAFETY: valid strings; mnt is a mount fd of ours.
    errno(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt,
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// open_tree(OPEN_TREE_CLONE) of /tmp/decoy: a detached bind mount.
fn clone_decoy() -> io::Result<libc::c_long> {
    // SAFETY: a valid path.
    errno(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/tmp/decoy".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_long,
        )
    })
}

#[test]
fn mount_rules_hold_on_the_new_mount_api() -> anyhow::Result<()> {
    if !lsm_available("mount_rules_hold_on_the_new_mount_api") {
        return Ok(());
    }
    let d = setup(
        "mountapi",
        "echo real >/etc/guarded && echo decoy >/tmp/decoy && mkdir -p /mnt/t && touch /mnt/f",
    )?;
    let before = snapshot(&d, "a", "/etc/guarded");
    // sysfs: a type the VPS's user namespace may mount (its network
    // namespace is its own) that the policy does not allow.
    denied(
        in_vps(&d, "a", || new_api_mount("sysfs")),
        "fsopen(sysfs) + FSCONFIG_CMD_CREATE",
    );
    expect_event(&d, "a", "sb_kern_mount", "default:mounts.allow_types");
    in_vps(&d, "a", || new_api_mount("tmpfs")).expect("an allowed type through the new API");

    denied(
        in_vps(&d, "a", || attach(clone_decoy()?, "/etc/guarded")),
        "open_tree + move_mount of a decoy over the file",
    );
    expect_event(&d, "a", "move_mount", RULE);
    in_vps(&d, "a", || {
        attach(clone_decoy()?, "/mnt/f")?;
        // SAFETY: a valid path.
        errno(unsafe { libc::umount2(c"/mnt/f".as_ptr(), libc::MNT_DETACH) }.into()).map(drop)
    })
    .expect("the same bind onto a file no rule covers");
    assert_eq!(snapshot(&d, "a", "/etc/guarded"), before);
    Ok(())
}

/// An init that hides the real /etc from /proc/PID/root: it binds a decoy
/// /etc over /etc, then chroots into the decoy tree, before any policy
/// holds a file of it.
const DECOY_INIT: &str = "#!/bin/sh
echo real >/etc/guarded
mkdir -p /decoy/etc /decoy/bin /realetc
echo decoy >/decoy/etc/guarded
cp /bin/busybox /decoy/bin/busybox
ln -s busybox /decoy/bin/sleep
mount --bind /etc /realetc
mount --bind /decoy/etc /etc
exec chroot /decoy /bin/sleep 100000
";

#[test]
fn file_rules_resolve_in_the_root_captured_at_launch() -> anyhow::Result<()> {
    if !lsm_available("file_rules_resolve_in_the_root_captured_at_launch") {
        return Ok(());
    }
    let d = Daemon::start("decoyroot")?;
    d.template_with_init("decoy", DECOY_INIT)?;
    d.ok(&["create", "a", "--template", "decoy"]);
    d.ok(&["start", "a"]);
    let pid = init_pid(&d, "a");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::read_to_string(format!("/proc/{pid}/root/etc/guarded"))
        .ok()
        .as_deref()
        != Some("decoy\n")
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the init never chrooted into its decoy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    fs::create_dir_all(d.policies())?;
    fs::write(d.policies().join("default.yaml"), POLICY)?;
    // The real file (reached through the bind the init kept) is the one
    // held; the decoys stay writable.
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_vps(&d, "a", || open_write("/realetc/guarded")).is_ok() {
        anyhow::ensure!(Instant::now() < deadline, "the real file was never held");
        std::thread::sleep(Duration::from_millis(100));
    }
    expect_event(&d, "a", "file_open", RULE);
    in_vps(&d, "a", || open_write("/etc/guarded"))
        .expect("the decoy bound over /etc is no one's rule");
    in_vps(&d, "a", || open_write("/decoy/etc/guarded")).expect("the chroot's decoy neither");
    Ok(())
}
