//! Attacks on vzhost's API surface (issue 12, findings 5, 6 and 12), each
//! checking that nothing on the host changed: what a VPS process left
//! behind by `exec` can reach of its caller, what `enter` opens when a VPS
//! rigs its /dev/pts, what an unprivileged host user can do to the metrics
//! endpoint. And how the API answers malformed requests and failures.
use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::{
        fd::{AsFd as _, AsRawFd as _, OwnedFd},
        unix::{fs::MetadataExt as _, net::UnixStream, process::CommandExt as _},
    },
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    fcntl::{FcntlArg, OFlag, fcntl},
    sys::inotify::{AddWatchFlags, InitFlags, Inotify},
};
use vzhost_tests::{Daemon, Scratch, stderr, vzhost_bin};

fn vz(d: &Daemon, args: &[&str]) -> Command {
    let mut cmd = Command::new(vzhost_bin());
    cmd.args(args).env("VZHOST_SOCKET", d.socket());
    cmd
}

/// Wait for `child` at most `limit`; kill it if it takes longer.
fn wait_at_most(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Targets of the `fds` of process `pid` of VPS `vps`, as it sees them.
fn fd_targets(d: &Daemon, vps: &str, pid: &str, fds: &[u32]) -> Vec<String> {
    fds.iter()
        .map(|fd| d.sh_ok(vps, &format!("readlink /proc/{pid}/fd/{fd}")))
        .collect()
}

fn running(d: &Daemon, name: &str) {
    d.ok(&["create", name]);
    d.ok(&["start", name]);
}

#[test]
fn a_process_left_behind_by_exec_keeps_nothing_of_its_caller() -> anyhow::Result<()> {
    let d = Daemon::start("exec-fds")?;
    running(&d, "a");
    let s = Scratch::new()?;
    let out = s.file("out", "")?;
    // The caller's "terminal": a pipe whose both ends the test keeps.
    let (stdin_r, stdin_w) = nix::unistd::pipe()?;
    // Left behind: it reads what the caller types next (from the stdin it
    // had, kept as fd 3: sh gives background jobs /dev/null), reopens the
    // caller's stdout (truncating a file) to write to it, and stays.
    let script = "exec 3<&0; (trap '' PIPE; sleep 1; echo late; cat <&3 > /tmp/stolen; \
                  echo x > /proc/self/fd/1; exec sleep 30) & echo $! > /tmp/bg; echo now";
    let status = vz(&d, &["exec", "a", "--", "sh", "-c", script])
        .stdin(Stdio::from(stdin_r.try_clone()?))
        .stdout(Stdio::from(fs::File::options().write(true).open(&out)?))
        .status()?;
    assert!(status.success());
    nix::unistd::write(&stdin_w, b"secret\n")?;
    std::thread::sleep(Duration::from_millis(2500));

    assert_eq!(
        fs::read_to_string(&out)?,
        "now\n",
        "the host file is intact"
    );
    fcntl(&stdin_r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    let mut typed = [0u8; 16];
    let n = nix::unistd::read(&stdin_r, &mut typed)?;
    assert_eq!(
        &typed[..n],
        b"secret\n",
        "what was typed stayed with the caller"
    );
    assert_eq!(
        d.sh_ok("a", "cat /tmp/stolen"),
        "",
        "and never reached the VPS"
    );

    // Still there: its stdio are the session's pipes, not the caller's
    // pipe or file.
    let bg = d.sh_ok("a", "cat /tmp/bg");
    let ours = fs::metadata(format!("/proc/self/fd/{}", stdin_r.as_raw_fd()))?.ino();
    for target in fd_targets(&d, "a", &bg, &[1, 2, 3]) {
        assert!(target.starts_with("pipe:["), "{target}");
        assert_ne!(target, format!("pipe:[{ours}]"), "the caller's own pipe");
    }
    Ok(())
}

#[test]
fn exec_on_a_terminal_runs_on_a_pty_of_the_vps() -> anyhow::Result<()> {
    let d = Daemon::start("exec-tty")?;
    running(&d, "a");
    let pty = nix::pty::openpty(None, None)?;
    let slave = || -> anyhow::Result<Stdio> { Ok(Stdio::from(pty.slave.try_clone()?)) };
    let mut child = vz(
        &d,
        &[
            "exec",
            "a",
            "--",
            "sh",
            "-c",
            "tty; (trap '' HUP; : > /tmp/ready; sleep 30) & echo bg=$! > /tmp/bg; \
             until [ -e /tmp/ready ]; do sleep 0.1; done; exit 5",
        ],
    )
    .stdin(slave()?)
    .stdout(slave()?)
    .stderr(Stdio::piped())
    .spawn()?;
    drop(pty.slave);
    let master = pty.master;
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        // EIO once the last user of the terminal is gone.
        let _ = fs::File::from(master).read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let status = wait_at_most(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(5));
    let text = reader.join().unwrap();
    assert!(
        text.contains("/dev/pts/"),
        "the command ran on a pty: {text:?}"
    );
    let bg = d.sh_ok("a", "cat /tmp/bg");
    let bg = bg.trim_start_matches("bg=");
    // Left behind (the hangup ignored), it holds the VPS's pty, nothing
    // of the caller's.
    for target in fd_targets(&d, "a", bg, &[1, 2]) {
        assert!(
            target.starts_with("/dev/pts/"),
            "the VPS's own pty: {target}"
        );
    }
    Ok(())
}

/// Every inotify event on `path` while `attack` runs.
fn events_on(path: &std::path::Path, attack: impl FnOnce()) -> Vec<String> {
    let ino = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
    ino.add_watch(path, AddWatchFlags::IN_ALL_EVENTS).unwrap();
    attack();
    match ino.read_events() {
        Ok(events) => events.iter().map(|e| format!("{:?}", e.mask)).collect(),
        Err(nix::errno::Errno::EAGAIN) => Vec::new(),
        Err(e) => panic!("inotify: {e}"),
    }
}

#[test]
fn enter_never_opens_what_a_vps_puts_at_its_ptmx() -> anyhow::Result<()> {
    let d = Daemon::start("enter-ptmx")?;
    running(&d, "a");
    let s = Scratch::new()?;
    let target = s.file("host-secret", "host content\n")?;
    let before = fs::metadata(&target)?;
    // VPS root swaps its pty multiplexer for a symlink to a host path (a
    // path the daemon, as host root, would resolve on the host). Lazily:
    // the console, a pty of this devpts, keeps it busy.
    d.sh_ok(
        "a",
        &format!(
            "umount -l /dev/pts && ln -s {} /dev/pts/ptmx && test -L /dev/pts/ptmx",
            target.display()
        ),
    );
    let enter = || {
        let mut child = vz(&d, &["enter", "a"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"exit 0\n").unwrap();
        let status = wait_at_most(&mut child, Duration::from_secs(20));
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    };
    let mut outcome = None;
    let seen = events_on(&target, || outcome = Some(enter()));
    let (status, err) = outcome.unwrap();
    assert!(seen.is_empty(), "the host file was touched: {seen:?}");
    let after = fs::metadata(&target)?;
    assert_eq!(fs::read_to_string(&target)?, "host content\n");
    assert_eq!(
        (after.mtime(), after.mtime_nsec(), after.mode()),
        (before.mtime(), before.mtime_nsec(), before.mode())
    );
    assert_eq!(status.code(), Some(6), "refused as a kernel refusal: {err}");
    assert!(err.contains("pty"), "{err}");

    // A FIFO there neither hangs enter nor is taken for a pty.
    d.sh_ok("a", "rm /dev/pts/ptmx && mkfifo /dev/pts/ptmx");
    let (status, err) = enter();
    assert_eq!(status.code(), Some(6), "{err}");
    assert_eq!(d.sh_ok("a", "echo alive"), "alive", "the VPS is unharmed");
    Ok(())
}

/// A host process of user nobody that opens `conns` connections to the
/// daemon's metrics endpoint and holds them for `secs` seconds.
fn flood(d: &Daemon, conns: usize, secs: u32) -> anyhow::Result<Child> {
    let ns = d.netns().expect("the daemon's netns").as_raw_fd();
    let mut cmd = Command::new("/bin/sleep");
    cmd.arg(secs.to_string()).stdin(Stdio::null());
    // SAFETY: only raw syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let ok = |r: libc::c_int| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(r)
                }
            };
            ok(libc::setns(ns, libc::CLONE_NEWNET))?;
            ok(libc::setgroups(0, std::ptr::null()))?;
            ok(libc::setresgid(65534, 65534, 65534))?;
            ok(libc::setresuid(65534, 65534, 65534))?;
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 9464u16.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
                },
                sin_zero: [0; 8],
            };
            for _ in 0..conns {
                let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                if s < 0 {
                    break;
                }
                libc::connect(
                    s,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
            }
            Ok(())
        });
    }
    Ok(cmd.spawn()?)
}

/// CPU time (user + system) `pid` has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Set the open files limit of `pid` if `new` is given; the old one.
fn fd_limit(pid: u32, new: Option<(u64, u64)>) -> (u64, u64) {
    let new = new.map(|(soft, hard)| libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    });
    // SAFETY: rlimit is plain old data.
    let mut old: libc::rlimit = unsafe { std::mem::zeroed() };
    let new_ptr = new.as_ref().map_or(std::ptr::null(), |n| n as *const _);
    // SAFETY: prlimit on our own child; the pointers are valid or null.
    let r = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, new_ptr, &mut old) };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    (old.rlim_cur, old.rlim_max)
}

/// `list` answers long before the flood (held 30 s) lets go: a stalled
/// daemon would wait for it. Generous, since the VM is emulated.
fn list_answers_during_the_flood(d: &Daemon) {
    let t = Instant::now();
    d.ok(&["list"]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "list took {:?}",
        t.elapsed()
    );
}

#[test]
fn an_unprivileged_flood_of_the_metrics_endpoint_stalls_nothing() -> anyhow::Result<()> {
    let d = Daemon::start("metrics-flood")?;
    d.ok(&["create", "a"]);
    let log_before = d.log().len();
    let pid = d.pid().expect("the daemon runs");

    // Hundreds of connections held open by user nobody.
    let mut held = flood(&d, 800, 30)?;
    std::thread::sleep(Duration::from_secs(1));
    list_answers_during_the_flood(&d);
    let _ = held.kill();
    let _ = held.wait();
    std::thread::sleep(Duration::from_millis(500));

    // The same with the daemon out of descriptors: accept fails (EMFILE)
    // with connections queued, which used to spin and log without end.
    let open = fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    let (soft, hard) = fd_limit(pid, None);
    fd_limit(pid, Some((open + 4, hard)));
    let mut starved = flood(&d, 800, 30)?;
    let cpu_before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let cpu = cpu_ticks(pid) - cpu_before;
    fd_limit(pid, Some((soft, hard)));
    let _ = starved.kill();
    let _ = starved.wait();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    assert!(cpu < hz / 2, "the daemon used {cpu} ticks of CPU in 3 s");

    // Both pass without harm: the endpoint and the API answer again.
    std::thread::sleep(Duration::from_millis(1500));
    list_answers_during_the_flood(&d);
    let (code, head, body) = d.http_get("127.0.0.1:9464", "/metrics", "*/*")?;
    assert_eq!(code, 200, "{head}");
    assert!(body.contains("vzhost_vps_up{vps=\"a\"} 0"), "{body}");
    let log = d.log();
    let grown = log.len() - log_before;
    assert!(grown < 64 * 1024, "the daemon log grew by {grown} bytes");
    assert!(
        log.contains("metrics accept failed"),
        "the failing accepts were reported: {}",
        &log[log_before..]
    );
    Ok(())
}

/// What the daemon answers to `bytes` sent raw on its socket.
fn raw_answer(d: &Daemon, bytes: &[u8]) -> serde_json::Value {
    let sock = UnixStream::connect(d.socket()).unwrap();
    let mut writer = sock.try_clone().unwrap();
    let bytes = bytes.to_vec();
    // The daemon stops reading a line past its limit: write aside.
    std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    let mut line = String::new();
    BufReader::new(sock).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn the_api_refuses_malformed_lines_and_failures_keep_their_kind() -> anyhow::Result<()> {
    let d = Daemon::start("api-kinds")?;
    let mut huge = vec![b' '; 2 << 20];
    huge.push(b'\n');
    for bytes in [
        &b"not json\n"[..],
        b"{\"op\":\"format_disk\"}\n",
        b"{\"op\":\"start\"}\n",
        b"{\"op\":\"destroy\",\"name\":\"a\",\"force\":\"yes\"}\n",
        &huge,
    ] {
        let reply = raw_answer(&d, bytes);
        assert_eq!(reply["error"]["kind"], "invalid", "{reply}");
    }
    assert_eq!(
        raw_answer(&d, b"{\"op\":\"ping\"}\n"),
        serde_json::json!({"ok": null})
    );
    // Descriptors sent along with a request are not kept.
    let sock = UnixStream::connect(d.socket())?;
    let (_r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe()?;
    nix::sys::socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(b"{\"op\":\"list\"}\n")],
        &[nix::sys::socket::ControlMessage::ScmRights(&[w
            .as_fd()
            .as_raw_fd()])],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )?;
    let mut line = String::new();
    BufReader::new(&sock).read_line(&mut line)?;
    assert!(line.starts_with("{\"ok\":[]"), "{line}");

    // The kind of a failure is the CLI's exit code.
    let code = |args: &[&str]| d.vz(args).unwrap().status.code();
    running(&d, "a");
    assert_eq!(code(&["stop", "zz"]), Some(3), "not found");
    assert_eq!(code(&["start", "a"]), Some(4), "already running");
    assert_eq!(code(&["create", "a"]), Some(4), "already exists");
    assert_eq!(code(&["destroy", "a"]), Some(4), "running without --force");
    assert_eq!(code(&["create", "Bad!"]), Some(5), "a bad name");
    assert_eq!(
        code(&["create", "m", "--memory", "12QB"]),
        Some(5),
        "a bad size"
    );
    assert_eq!(code(&["policy", "show", "nope"]), Some(3), "no such policy");
    assert_eq!(code(&["frobnicate"]), Some(2), "usage");
    d.ok(&["create", "b"]);
    let out = d.vz(&["exec", "b", "--", "true"])?;
    assert_eq!(
        out.status.code(),
        Some(4),
        "b is not running: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
    assert_eq!(
        code(&["exec", "a", "--", "sh", "-c", "exit 3"]),
        Some(3),
        "the command's own"
    );
    // The log has a line per request naming it, its VPS, its outcome.
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| ["\"stop\"", "\"zz\"", "took_ms", "not_found"]
                .iter()
                .all(|w| l.contains(w))),
        "{log}"
    );
    Ok(())
}
