//! Attacks on the host from inside a VPS that the hardening closed: each
//! test performs the attack and checks that it failed and that nothing on
//! the host changed.
use std::fs;

use vzhost_tests::Daemon;

/// A policy for VPS `a`: a short device list without urandom, and one
/// writable sysctl.
const LOCKDOWN: &str = "selector:\n  names: [a]\nmode: enforce\nallow_degraded: true\ndevices:\n  allow: [\"c 1:3 rwm\", \"c 1:5 rwm\", \"c 5:2 rw\", \"c 136:* rw\"]\nsysctl:\n  allow_write: [net.ipv4.ip_forward]\n";

/// An init whose very first instructions try a device and a sysctl its
/// policy denies, records what happened, then becomes busybox init.
const EAGER_INIT: &str = "#!/bin/sh\n{\n  head -c 4 /dev/urandom >/dev/null 2>&1 && echo device=opened || echo device=denied\n  (echo 32 > /proc/sys/net/ipv4/ip_default_ttl) 2>/dev/null && echo sysctl=written || echo sysctl=denied\n} > /first.log\nexec /bin/busybox init\n";

/// Finding 7: the guards were off while the VPS's init already ran.
#[test]
fn an_init_is_guarded_from_its_first_instruction() -> anyhow::Result<()> {
    let d = Daemon::start("hard-first")?;
    d.put_policy("lockdown.yaml", LOCKDOWN);
    d.template_with_init("eager", EAGER_INIT)?;
    d.ok(&["create", "a", "--template", "eager"]);
    d.ok(&["start", "a"]);
    let mut log = String::new();
    for _ in 0..100 {
        log = d
            .sh("a", "cat /first.log 2>/dev/null")
            .stdout
            .escape_ascii()
            .to_string();
        if log.contains("sysctl=") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        log.contains("device=denied"),
        "the init opened a denied device: {log}"
    );
    assert!(
        log.contains("sysctl=denied"),
        "the init wrote a denied sysctl: {log}"
    );
    assert_eq!(d.sh_ok("a", "cat /proc/sys/net/ipv4/ip_default_ttl"), "64");
    Ok(())
}

/// Runs the probe at boot, as a process the init starts, then becomes
/// busybox init.
const PROBING_INIT: &str = "#!/bin/sh\n{\n  /usr/bin/vzprobe mount_setattr_rw /sys\n  /usr/bin/vzprobe fspick_rw /sys\n} > /boot.log 2>&1\nexec /bin/busybox init\n";

/// `vzprobe CALL PATH` on the host, in a mount namespace of its own where
/// PATH is a read-only tmpfs: the calls work on this kernel.
fn probe_on_the_host(probe: &std::path::Path, call: &str) -> String {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = std::process::Command::new(probe);
    cmd.args([call, "/mnt"]);
    // SAFETY: only raw syscalls on static strings between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let ok = |r: libc::c_int| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            ok(libc::unshare(libc::CLONE_NEWNS))?;
            ok(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            ok(libc::mount(
                c"tmpfs".as_ptr(),
                c"/mnt".as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY,
                std::ptr::null(),
            ))
        });
    }
    let out = cmd.output().expect("run the probe on the host");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Issue 12's last gap: mount_setattr(2) and fspick(2) + fsconfig change
/// an existing mount without any LSM hook, so they would make the VPS's
/// read-only /sys writable past `mounts.remount_read_only`. Everything in
/// a VPS (what its init starts, what `vzhost exec` starts) gets ENOSYS
/// for them and falls back to mount(2), which the hooks hold.
#[test]
fn the_mount_calls_no_hook_sees_fail_inside_a_vps() -> anyhow::Result<()> {
    let d = Daemon::start("hard-mountapi")?;
    let scratch = vzhost_tests::Scratch::new()?;
    let probe = scratch.file("vzprobe", "")?;
    fs::write(&probe, vzhost_tests::PROBE)?;
    fs::set_permissions(&probe, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    for call in ["mount_setattr_rw", "fspick_rw"] {
        assert_eq!(
            probe_on_the_host(&probe, call),
            "ok\n",
            "{call} on the host"
        );
    }

    d.template_with(
        "probing",
        PROBING_INIT,
        &[("usr/bin/vzprobe", vzhost_tests::PROBE)],
    )?;
    d.ok(&["create", "a", "--template", "probing"]);
    d.ok(&["start", "a"]);
    let mut boot = String::new();
    for _ in 0..100 {
        boot = d.sh_ok("a", "cat /boot.log 2>/dev/null || true");
        if boot.lines().count() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let refused = |out: &str, call: &str| {
        assert!(
            out.contains(&format!("{call}: errno {}", libc::ENOSYS)),
            "{call} inside the VPS: {out}"
        );
    };
    refused(&boot, "mount_setattr");
    refused(&boot, "fspick");
    refused(
        &d.sh("a", "vzprobe mount_setattr_rw /sys")
            .stdout
            .escape_ascii()
            .to_string(),
        "mount_setattr",
    );
    refused(
        &d.sh("a", "vzprobe fspick_rw /sys")
            .stdout
            .escape_ascii()
            .to_string(),
        "fspick",
    );
    let sys = d.sh_ok("a", "grep ' /sys sysfs ' /proc/mounts");
    assert!(
        sys.contains(" ro,") || sys.contains(" ro "),
        "/sys stayed read-only: {sys}"
    );
    // A setuid program still works: the filter needs no no_new_privs.
    assert_eq!(
        d.sh_ok("a", "grep NoNewPrivs /proc/self/status").trim(),
        "NoNewPrivs:\t0"
    );
    Ok(())
}
