//! Issue 13 end to end: two Debian VPSs from one template boot their own
//! systemd and sshd under the shipped default policy; a real OpenSSH
//! client logs in to each with the password `vzhost passwd` set; `reboot`
//! and `poweroff` inside behave as on a real server. Runs natively (in the
//! test's network namespace) and in the VM on every kernel.
use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt as _,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use vzhost_tests::{Daemon, Scratch, debian_template, in_vm, stderr, vzhost_bin, wait_for};

const A: &str = "10.213.0.21";
const B: &str = "10.213.0.22";

/// `d` with the Debian template imported as `debian`.
fn with_debian(d: &Daemon) {
    let template = debian_template();
    d.ok(&["template", "import", "debian", template.to_str().unwrap()]);
}

/// Wait (up to a minute: the VM is emulated) for sshd's banner at `ip`,
/// seen from the host side of the bridge.
fn await_sshd(d: &Daemon, ip: &str) {
    let addr: SocketAddr = format!("{ip}:22").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(if in_vm() { 180 } else { 60 });
    let ns = d.netns().expect("the daemon's netns").try_clone().unwrap();
    let seen = std::thread::spawn(move || {
        use std::os::fd::AsRawFd as _;
        // SAFETY: setns on this thread only, into a netns fd we hold.
        let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns into the daemon's netns");
        while Instant::now() < deadline {
            let mut banner = [0u8; 7];
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    s.read_exact(&mut banner)
                })
                .is_ok()
                && &banner == b"SSH-2.0"
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    })
    .join()
    .unwrap();
    assert!(seen, "sshd at {ip} never sent its banner");
}

/// A real OpenSSH client, password authentication only, running `command`
/// as root at `ip` (from the daemon's network namespace).
fn ssh(d: &Daemon, scratch: &Scratch, ip: &str, password: &str, command: &str) -> Output {
    let askpass = scratch
        .file("askpass", &format!("#!/bin/sh\necho '{password}'\n"))
        .unwrap();
    fs::set_permissions(&askpass, fs::Permissions::from_mode(0o700)).unwrap();
    let argv = [
        "ssh",
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "PreferredAuthentications=password",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "NumberOfPasswordPrompts=1",
        "-o",
        "ConnectTimeout=30",
        "-o",
        "LogLevel=ERROR",
        &format!("root@{ip}"),
        command,
    ];
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .stdin(Stdio::null());
    vzhost_tests::output_in_netns(d.netns().expect("the daemon's netns"), cmd).expect("run ssh")
}

/// Whether `vps` reports `status` within `limit`.
fn await_status(d: &Daemon, vps: &str, status: &str, limit: Duration) -> bool {
    wait_for(limit, || {
        d.status(vps).is_some_and(|v| v["status"] == status)
    })
}

#[test]
fn two_debian_vpss_boot_systemd_and_let_root_in_over_ssh() -> anyhow::Result<()> {
    let d = Daemon::start("debian")?;
    let scratch = Scratch::new()?;
    with_debian(&d);
    for (name, ip) in [("a", A), ("b", B)] {
        d.ok(&[
            "create",
            name,
            "--template",
            "debian",
            "--ip",
            ip,
            "--hostname",
            &format!("{name}.example"),
        ]);
        let set = d.passwd(name, "root", &format!("pw-{name}"));
        assert!(set.status.success(), "passwd: {}", stderr(&set));
        d.ok(&["start", name]);
    }
    for (name, ip) in [("a", A), ("b", B)] {
        await_sshd(&d, ip);
        let out = ssh(
            &d,
            &scratch,
            ip,
            &format!("pw-{name}"),
            "id -u; cat /proc/1/comm; hostname; systemctl is-system-running --wait",
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            ["0", "systemd", &format!("{name}.example"), "running"],
            "ssh into {name}: {text}{}",
            stderr(&out)
        );
        let wrong = ssh(&d, &scratch, ip, "not-the-password", "true");
        assert_eq!(
            wrong.status.code(),
            Some(255),
            "a wrong password is refused"
        );
    }

    // exec and enter work while systemd runs (its cgroup is delegated).
    assert_eq!(d.sh_ok("a", "cat /proc/1/comm").trim(), "systemd");
    let mut enter = Command::new(vzhost_bin())
        .args(["enter", "b"])
        .env("VZHOST_SOCKET", d.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    enter
        .stdin
        .take()
        .unwrap()
        .write_all(b"hostname; exit 3\n")?;
    let entered = enter.wait_with_output()?;
    assert_eq!(entered.status.code(), Some(3), "{}", stderr(&entered));
    assert!(String::from_utf8_lossy(&entered.stdout).contains("b.example"));

    // Each VPS its own identity: machine-id and SSH host keys.
    let identity =
        |vps: &str| d.sh_ok(vps, "cat /etc/machine-id /etc/ssh/ssh_host_ed25519_key.pub");
    let (id_a, id_b) = (identity("a"), identity("b"));
    assert_eq!(id_a.lines().next().map(str::len), Some(32), "{id_a}");
    assert_ne!(
        id_a.lines().next(),
        id_b.lines().next(),
        "machine-ids differ"
    );
    assert_ne!(id_a.lines().nth(1), id_b.lines().nth(1), "host keys differ");

    // `reboot` inside a: back with a new init and sshd answering, while b
    // keeps running the same init.
    let (a_init, b_init) = (d.init_pid("a"), d.init_pid("b"));
    let _ = d.sh("a", "systemctl reboot");
    let rebooted = wait_for(Duration::from_secs(if in_vm() { 240 } else { 60 }), || {
        d.init_pid("a").is_some_and(|p| Some(p) != a_init)
    });
    assert!(rebooted, "a booted again with a new init");
    await_sshd(&d, A);
    let again = ssh(&d, &scratch, A, "pw-a", "cat /proc/1/comm");
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "systemd",
        "{}",
        stderr(&again)
    );
    assert_eq!(d.init_pid("b"), b_init, "b was not touched");

    // `stop` halts systemd cleanly (SIGRTMIN+3), not by the kill after
    // the stop timeout.
    let t = Instant::now();
    d.ok(&["stop", "b"]);
    let took = t.elapsed();
    println!("stop of a Debian VPS took {took:?}");
    if !in_vm() {
        assert!(took < Duration::from_secs(5), "stop took {took:?}");
    }
    assert!(
        !d.log().contains("killing"),
        "systemd had to be killed: {}",
        d.log()
    );

    // `poweroff` inside a: stopped and cleaned up; it starts again.
    let _ = d.sh("a", "systemctl poweroff");
    assert!(
        await_status(
            &d,
            "a",
            "stopped",
            Duration::from_secs(if in_vm() { 240 } else { 60 })
        ),
        "poweroff stops the VPS"
    );
    // The cleanup runs under the VPS's lock right after init is seen gone.
    assert!(
        wait_for(Duration::from_secs(30), || !d.vps_cgroup("a").exists()),
        "its cgroup is gone"
    );
    d.ok(&["start", "a"]);
    await_sshd(&d, A);
    Ok(())
}
