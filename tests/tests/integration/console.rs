//! The console: /dev/console of a VPS is a pty of its own whose output the
//! host keeps in its console log, and `vzhost console` attaches a terminal
//! to it (through the daemon) until the detach key.
use std::{
    fs,
    os::fd::OwnedFd,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use vzhost_tests::{Daemon, stderr, vzhost_bin};

/// An init that greets on the console, then runs busybox init with a
/// shell on /dev/console (respawned), as a getty would be.
const GREETING_INIT: &str = "#!/bin/sh\n\
    echo hello-from-init\n\
    printf 'red:\\033[31m!\\n' > /dev/console\n\
    exec /bin/busybox init\n";

const CONSOLE_INITTAB: &str = "::sysinit:/bin/mkdir -p /tmp\n\
    console::respawn:/bin/sh -i\n";

const CAP: u64 = 1 << 20;

fn vz(d: &Daemon, args: &[&str]) -> Command {
    let mut cmd = Command::new(vzhost_bin());
    cmd.args(args).env("VZHOST_SOCKET", d.socket());
    cmd
}

/// A `vzhost console` child, killed if a test ends before it does (it
/// would hold its console session, and with it the daemon, open).
struct Client(Child);

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vzhost console NAME` on a terminal of the test's own: the child and
/// the terminal's other side.
fn attach(d: &Daemon, name: &str) -> anyhow::Result<(Client, OwnedFd)> {
    let pty = nix::pty::openpty(None, None)?;
    let slave = || -> anyhow::Result<Stdio> { Ok(Stdio::from(pty.slave.try_clone()?)) };
    let child = vz(d, &["console", name])
        .stdin(slave()?)
        .stdout(slave()?)
        .stderr(slave()?)
        .spawn()?;
    drop(pty.slave);
    Ok((Client(child), pty.master))
}

/// Read the terminal until `text` shows (20 s at most); what was read.
fn read_until(term: &OwnedFd, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(text) {
        assert!(
            Instant::now() < deadline,
            "never saw {text:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
        let mut ready = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(term),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut ready, nix::poll::PollTimeout::from(200u16)).unwrap_or(0) == 0 {
            continue;
        }
        match nix::unistd::read(term, &mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn wait_at_most(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait (60 s at most: the VM emulates its CPU) for `path` to hold `text`.
fn logged(path: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).contains(text))
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "{} never held {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn console_vps(d: &Daemon, init: &str) -> anyhow::Result<()> {
    d.template_with(
        "console",
        init,
        &[("etc/inittab", CONSOLE_INITTAB.as_bytes())],
    )?;
    d.ok(&["create", "a", "--template", "console"]);
    d.ok(&["start", "a"]);
    Ok(())
}

#[test]
fn the_console_is_a_pty_of_the_vps_kept_in_its_log_and_attachable() -> anyhow::Result<()> {
    let d = Daemon::start("console")?;
    console_vps(&d, GREETING_INIT)?;
    let log = d.root().join("vps/a/disk/console.log");
    logged(&log, "hello-from-init\n");
    // A pty of the VPS's own devpts, not the host's, nor /dev/null.
    let tty = d.sh_ok("a", "ls -l /dev/console; readlink /proc/1/fd/1");
    assert!(
        tty.contains("/dev/console") && tty.starts_with('c'),
        "{tty}"
    );
    assert!(
        tty.contains("/dev/pts/0"),
        "PID 1 writes to the VPS's pty 0: {tty}"
    );

    let (mut client, term) = attach(&d, "a")?;
    read_until(&term, "Ctrl-]");
    // A terminal of the usual size, whose size is known.
    nix::unistd::write(&term, b"\recho $((6*7))-from-console $(stty size)\r")?;
    read_until(&term, "42-from-console 24 80");
    // A second attach is refused while this one lasts.
    let busy = vz(&d, &["console", "a"]).stdin(Stdio::null()).output()?;
    assert_eq!(busy.status.code(), Some(4), "{}", stderr(&busy));
    assert!(
        stderr(&busy).contains("another session"),
        "{}",
        stderr(&busy)
    );
    // Ctrl-] detaches; the VPS keeps running.
    nix::unistd::write(&term, &[0x1d])?;
    assert!(wait_at_most(&mut client.0, Duration::from_secs(10)).success());
    read_until(&term, "Detached");
    assert_eq!(d.sh_ok("a", "echo alive"), "alive");
    // What was typed and answered is in the log too, and the log prints
    // with the VPS's escape sequences shown, not obeyed.
    logged(&log, "42-from-console");
    let printed = d.ok(&["console", "a", "--log"]);
    assert!(printed.contains("hello-from-init"), "{printed}");
    assert!(printed.contains("red:\\x1b[31m!"), "{printed}");
    assert!(!printed.contains('\x1b'), "no raw escape reaches the admin");
    // Attach again after a detach.
    let (mut again, term) = attach(&d, "a")?;
    nix::unistd::write(&term, b"echo second-$((1+1))\r")?;
    read_until(&term, "second-2");
    nix::unistd::write(&term, &[0x1d])?;
    assert!(wait_at_most(&mut again.0, Duration::from_secs(10)).success());
    Ok(())
}

#[test]
fn a_stopped_vps_has_no_console_to_attach_but_its_log_prints() -> anyhow::Result<()> {
    let d = Daemon::start("console-stopped")?;
    console_vps(&d, GREETING_INIT)?;
    logged(&d.root().join("vps/a/disk/console.log"), "hello-from-init");
    d.ok(&["stop", "a"]);
    let out = vz(&d, &["console", "a"]).stdin(Stdio::null()).output()?;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
    assert!(d.ok(&["console", "a", "--log"]).contains("hello-from-init"));
    assert!(d.fails(&["console", "nosuch", "--log"]).contains("nosuch"));
    Ok(())
}

/// An init that closes every console it has (the keeper sees a hangup),
/// opens it again, floods it with 8 MB (four times what the log keeps),
/// and says when done.
const ATTACKER_INIT: &str = "#!/bin/sh\n\
    echo before-close\n\
    exec 0<&- 1>&- 2>&-\n\
    sleep 1\n\
    exec 1>/dev/console 2>&1\n\
    dd if=/dev/zero bs=1M count=8 2>/dev/null | tr '\\0' x\n\
    echo flood-end\n\
    exec /bin/busybox init\n";

/// Peak resident memory of `pid`, in KiB.
fn peak_rss_kib(pid: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_vps_that_hangs_up_and_floods_its_console_stays_bounded() -> anyhow::Result<()> {
    let d = Daemon::start("console-flood")?;
    d.template_with(
        "attacker",
        ATTACKER_INIT,
        &[("etc/inittab", CONSOLE_INITTAB.as_bytes())],
    )?;
    d.ok(&["create", "a", "--template", "attacker"]);
    d.ok(&["start", "a"]);
    // Attached and never reading its terminal, through the whole flood.
    let (_client, _term) = attach(&d, "a")?;
    let log = d.root().join("vps/a/disk/console.log");
    logged(&log, "flood-end\n");
    for f in [log.clone(), log.with_extension("log.1")] {
        let len = fs::metadata(&f)?.len();
        assert!(len <= CAP, "{} holds {len} bytes", f.display());
    }
    // The keeper outlived the hangup and holds little memory whatever
    // was written.
    // In the host-owned leaf of the VPS's cgroup, counted with the VPS.
    let procs = fs::read_to_string(d.vps_cgroup("a").join("vzhost-host/cgroup.procs"))?;
    let keeper = procs
        .lines()
        .find(|p| {
            fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim() == "vzhost-console")
        })
        .expect("the console keeper runs");
    let kib = peak_rss_kib(keeper);
    assert!(kib > 0 && kib < 16 << 10, "keeper peak RSS {kib} KiB");
    if let Some(pid) = d.pid() {
        let kib = peak_rss_kib(&pid.to_string());
        assert!(kib < 256 << 10, "daemon peak RSS {kib} KiB");
    }
    // The keeper drops its capabilities once it holds the console.
    let status = fs::read_to_string(format!("/proc/{keeper}/status"))?;
    assert!(
        status.lines().any(|l| l == "CapEff:\t0000000000000000"),
        "{status}"
    );
    assert_eq!(d.sh_ok("a", "echo alive"), "alive");
    Ok(())
}
