//! VPS partitions end to end, natively (hybrid cgroups) and in the VM (pure
//! v2): isolation, exec and enter, restart, limits, daemon crashes,
//! destroy, bad input.
use std::{
    fs,
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use vzhost_tests::{Daemon, stderr, vzhost_bin};

fn two_running(d: &Daemon) {
    d.ok(&["create", "a", "--hostname", "alpha"]);
    d.ok(&["create", "b", "--hostname", "bravo"]);
    d.ok(&["start", "a"]);
    d.ok(&["start", "b"]);
}

#[test]
fn two_vps_run_side_by_side_isolated() -> anyhow::Result<()> {
    let d = Daemon::start("side")?;
    two_running(&d);
    assert_eq!(d.sh_ok("a", "hostname"), "alpha");
    assert_eq!(d.sh_ok("b", "hostname"), "bravo");
    assert_eq!(d.sh_ok("a", "cat /proc/1/comm"), "init");
    let ps = d.sh_ok("a", "ps");
    let pid1: Vec<&str> = ps
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        pid1,
        ["1", "root", "init"],
        "the VPS has its own PID 1: {ps}"
    );
    // A long-lived process in b is invisible from a.
    d.sh_ok("b", "sleep 300 >/dev/null 2>&1 &");
    assert!(d.sh_ok("b", "ps").contains("sleep 300"));
    assert!(
        !d.sh_ok("a", "ps").contains("sleep"),
        "a sees only its own processes"
    );
    // Files are the VPS's own.
    d.sh_ok("a", "echo from-a > /root/note");
    assert_eq!(d.sh_ok("a", "cat /root/note"), "from-a");
    assert!(
        !d.sh("b", "test -e /root/note").status.success(),
        "b must not see a's file"
    );
    let template = d.root().join("templates/busybox");
    assert!(template.join("bin/sh").exists());
    assert!(
        !template.join("root/note").exists(),
        "the template stays untouched"
    );
    // Template files are root's inside; what the VPS writes is its range's on the host.
    assert_eq!(
        d.sh_ok("a", "stat -c %u:%g /bin/busybox /etc/passwd"),
        "0:0\n0:0"
    );
    let meta = fs::metadata(d.root().join("vps/a/disk/upper/root/note"))?;
    use std::os::unix::fs::MetadataExt as _;
    assert!(
        meta.uid() >= vzhost::model::IDMAP_FIRST,
        "owned by the VPS's host range: {}",
        meta.uid()
    );
    let list = d.list();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|v| v["status"] == "running"), "{list:?}");
    Ok(())
}

#[test]
fn exec_streams_stdio_and_returns_the_status() -> anyhow::Result<()> {
    let d = Daemon::start("exec")?;
    d.ok(&["create", "a"]);
    d.ok(&["start", "a"]);
    assert_eq!(d.sh("a", "exit 7").status.code(), Some(7));
    let mut child = Command::new(vzhost_bin())
        .args([
            "exec",
            "a",
            "--",
            "sh",
            "-c",
            "read x; echo out:$x; echo err:$x >&2; exit 3",
        ])
        .env("VZHOST_SOCKET", d.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(b"hello\n")?;
    let out = child.wait_with_output()?;
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out:hello\n");
    assert_eq!(stderr(&out), "err:hello\n");
    let missing = d.vz(&["exec", "a", "--", "/no/such/cmd"])?;
    assert_eq!(missing.status.code(), Some(127));
    Ok(())
}

#[test]
fn enter_gives_a_shell_on_a_pty() -> anyhow::Result<()> {
    let d = Daemon::start("enter")?;
    d.ok(&["create", "a", "--hostname", "shellbox"]);
    d.ok(&["start", "a"]);
    let mut child = Command::new(vzhost_bin())
        .args(["enter", "a"])
        .env("VZHOST_SOCKET", d.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"tty; hostname; echo answer=$((6*7)); exit 4\n")?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}{}", stderr(&out));
    assert!(
        text.contains("/dev/pts/"),
        "the shell runs on a pty: {text}"
    );
    assert!(
        text.contains("shellbox") && text.contains("answer=42"),
        "{text}"
    );
    Ok(())
}

#[test]
fn restart_of_one_vps_leaves_the_other_untouched() -> anyhow::Result<()> {
    let d = Daemon::start("restart")?;
    two_running(&d);
    d.sh_ok("b", "sleep 300 >/dev/null 2>&1 &");
    let before = d.sh_ok("b", "pidof sleep");
    d.sh_ok("a", "echo mark > /run/boot-mark");
    let init_before = d.status("a").unwrap()["init_pid"].clone();
    d.ok(&["restart", "a"]);
    assert_ne!(
        d.status("a").unwrap()["init_pid"],
        init_before,
        "a got a new init"
    );
    assert!(
        !d.sh("a", "test -e /run/boot-mark").status.success(),
        "a rebooted (/run is fresh)"
    );
    assert_eq!(
        d.sh_ok("b", "pidof sleep"),
        before,
        "b's process kept its PID"
    );
    Ok(())
}

#[test]
fn daemon_sigkill_leaves_vps_running_and_is_readopted() -> anyhow::Result<()> {
    let mut d = Daemon::start("crash")?;
    two_running(&d);
    let pids: Vec<u64> = d
        .list()
        .iter()
        .map(|v| v["init_pid"].as_u64().unwrap())
        .collect();
    d.kill9();
    for pid in &pids {
        assert!(
            fs::metadata(format!("/proc/{pid}")).is_ok(),
            "init {pid} survived the daemon"
        );
    }
    assert!(
        d.vz(&["list"])?.status.code() != Some(0),
        "no daemon to answer"
    );
    d.spawn()?;
    let list = d.list();
    assert!(
        list.iter().all(|v| v["status"] == "running"),
        "re-adopted: {list:?}"
    );
    let again: Vec<u64> = list
        .iter()
        .map(|v| v["init_pid"].as_u64().unwrap())
        .collect();
    assert_eq!(again, pids);
    assert_eq!(d.sh_ok("a", "hostname"), "alpha");
    d.ok(&["stop", "a"]);
    d.ok(&["stop", "b"]);
    for pid in &pids {
        let gone = Instant::now() + Duration::from_secs(5);
        while fs::metadata(format!("/proc/{pid}/cmdline")).is_ok_and(|_| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
        }) && Instant::now() < gone
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(d.list().iter().all(|v| v["status"] == "stopped"));
    Ok(())
}

#[test]
fn destroy_removes_cgroups_and_state_but_not_the_template() -> anyhow::Result<()> {
    let d = Daemon::start("destroy")?;
    d.ok(&["create", "a"]);
    d.ok(&["start", "a"]);
    d.sh_ok("a", "echo x > /root/x");
    let cg = d.vps_cgroup("a");
    assert!(cg.is_dir(), "the VPS has its cgroup");
    let template = d.root().join("templates/busybox");
    let template_files = fs::read_dir(template.join("bin"))?.count();
    let err = d.fails(&["destroy", "a"]);
    assert!(err.contains("running") && err.contains("--force"), "{err}");
    d.ok(&["destroy", "--force", "a"]);
    assert!(!cg.exists(), "cgroup removed");
    assert!(!d.root().join("vps/a").exists(), "state removed");
    assert!(d.list().is_empty());
    assert_eq!(fs::read_dir(template.join("bin"))?.count(), template_files);
    assert!(template.join("bin/sh").exists());
    Ok(())
}

#[test]
fn bad_input_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let d = Daemon::start("bad")?;
    let long = "a".repeat(64);
    for name in ["../x", "Web", long.as_str(), "-x", "a_b"] {
        let err = d.fails(&["create", "--", name]);
        assert!(err.contains("invalid VPS name"), "{name}: {err}");
    }
    let err = d.fails(&["create", "m", "--memory", "12QB"]);
    assert!(err.contains("memory") && err.contains("12QB"), "{err}");
    let err = d.fails(&["create", "t", "--template", "nope"]);
    assert!(
        err.contains("unknown template") && err.contains("nope"),
        "{err}"
    );
    let err = d.fails(&["create", "h", "--hostname", "bad_host"]);
    assert!(err.contains("hostname"), "{err}");
    assert!(d.list().is_empty(), "nothing was created");
    let entries: Vec<_> = fs::read_dir(d.root().join("vps"))?.collect();
    assert!(entries.is_empty(), "no half-made directories: {entries:?}");

    d.ok(&["create", "a"]);
    let err = d.fails(&["create", "a"]);
    assert!(err.contains("already exists"), "{err}");
    d.ok(&["start", "a"]);
    let err = d.fails(&["start", "a"]);
    assert!(err.contains("already running"), "{err}");
    let err = d.fails(&["stop", "zz"]);
    assert!(err.contains("does not exist"), "{err}");
    let err = d.fails(&["set", "a", "--cpus", "0"]);
    assert!(err.contains("cpus"), "{err}");
    // User ranges: configurable, never overlapping, never host root.
    let a_cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(d.root().join("vps/a/config.json"))?)?;
    let base = (a_cfg["idmap"]["base"].as_u64().unwrap() + 100).to_string();
    let err = d.fails(&["create", "c", "--uid-base", &base]);
    assert!(err.contains("overlap") && err.contains("VPS a"), "{err}");
    let err = d.fails(&["create", "c", "--uid-base", "0"]);
    assert!(err.contains("uid-base"), "{err}");
    d.ok(&["create", "c", "--uid-base", "3000000"]);
    d.ok(&["start", "c"]);
    d.sh_ok("c", "touch /root/owned");
    use std::os::unix::fs::MetadataExt as _;
    let uid = fs::metadata(d.root().join("vps/c/disk/upper/root/owned"))?.uid();
    assert_eq!(uid, 3_000_000, "c's root is host id 3000000");
    Ok(())
}

#[test]
fn failed_start_leaves_the_vps_stopped_and_intact() -> anyhow::Result<()> {
    let d = Daemon::start("badstart")?;
    // A template whose init cannot run.
    let src = tempfile::tempdir()?;
    fs::create_dir_all(src.path().join("bin"))?;
    fs::write(src.path().join("bin/sh"), "not a program")?;
    d.ok(&["template", "import", "broken", src.path().to_str().unwrap()]);
    d.ok(&["create", "a", "--template", "broken"]);
    let err = d.fails(&["start", "a"]);
    assert!(
        err.contains("failed to start") && err.contains("init"),
        "{err}"
    );
    assert_eq!(d.status("a").unwrap()["status"], "stopped");
    assert!(!d.vps_cgroup("a").exists(), "no cgroup left behind");
    assert!(
        d.root().join("vps/a/config.json").exists(),
        "the VPS itself is intact"
    );
    Ok(())
}

#[test]
fn passwd_sets_a_hash_in_the_vps_only() -> anyhow::Result<()> {
    let d = Daemon::start("passwd")?;
    d.ok(&["create", "a"]);
    let passwd = |user: &str, pw: &str| d.passwd("a", user, pw);
    let set = |pw: &str| {
        let out = passwd("root", pw);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    set("stopped-secret");
    d.ok(&["start", "a"]);
    let line = d.sh_ok("a", "grep ^root: /etc/shadow");
    let hash = line.split(':').nth(1).unwrap();
    assert!(
        sha_crypt::sha512_check("stopped-secret", hash).is_ok(),
        "{line}"
    );
    set("running-secret");
    let line = d.sh_ok("a", "grep ^root: /etc/shadow");
    assert!(sha_crypt::sha512_check("running-secret", line.split(':').nth(1).unwrap()).is_ok());
    assert_eq!(d.sh_ok("a", "stat -c %a /etc/shadow"), "600");
    let template = fs::read_to_string(d.root().join("templates/busybox/etc/shadow"))?;
    assert!(
        template.starts_with("root:*:"),
        "template untouched: {template}"
    );
    let out = passwd("nosuchuser", "x");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no user nosuchuser"),
        "{}",
        stderr(&out)
    );
    Ok(())
}

#[test]
fn daemon_killed_mid_create_leaves_whole_vps_or_none() -> anyhow::Result<()> {
    let mut d = Daemon::start("midcreate")?;
    // Creates in flight from another thread while the daemon is killed.
    let socket = d.socket();
    let creator = std::thread::spawn(move || {
        for i in 0..40 {
            let _ = Command::new(vzhost_bin())
                .args(["create", &format!("v{i}"), "--disk", "16M"])
                .env("VZHOST_SOCKET", &socket)
                .output();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    d.kill9();
    creator.join().expect("creator thread");
    d.spawn()?;
    let leftovers: Vec<_> = fs::read_dir(d.root().join("vps"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    let listed = d.list();
    for v in &listed {
        let name = v["name"].as_str().unwrap();
        assert!(
            d.root().join("vps").join(name).join("disk/upper").is_dir(),
            "{name} is whole"
        );
    }
    if let Some(v) = listed.first() {
        let name = v["name"].as_str().unwrap();
        d.ok(&["start", name]);
        assert_eq!(d.sh_ok(name, "hostname"), name);
    }
    Ok(())
}
