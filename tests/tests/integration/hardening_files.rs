//! Attacks on the host through a VPS's files (issue 12, findings 1, 2, 3,
//! 4, 11, 13, 14, 15), from inside a VPS as its root or as an
//! unprivileged host user. Each checks that the attack failed and that
//! nothing on the host changed: the contents, modes and mtimes of the host
//! files involved are compared before and after.
use std::{
    collections::BTreeMap,
    fs,
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _},
        process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use vzhost_tests::{Daemon, in_vm, stderr};

use crate::disk::XfsMount;

/// What a set of host paths held: content (of files), mode, mtime, and
/// the names in directories.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot(BTreeMap<PathBuf, (Vec<u8>, u32, i64, Vec<String>)>);

impl Snapshot {
    fn of(paths: &[&Path]) -> Self {
        Self(
            paths
                .iter()
                .map(|p| {
                    let meta = fs::symlink_metadata(p);
                    let (mode, mtime) = meta.as_ref().map_or((0, 0), |m| {
                        (m.mode(), m.mtime_nsec() + m.mtime() * 1_000_000_000)
                    });
                    let content = if meta.as_ref().is_ok_and(|m| m.is_file()) {
                        fs::read(p).unwrap()
                    } else {
                        Vec::new()
                    };
                    let mut names: Vec<String> = fs::read_dir(p)
                        .into_iter()
                        .flatten()
                        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect();
                    names.sort();
                    (p.to_path_buf(), (content, mode, mtime, names))
                })
                .collect(),
        )
    }
}

/// A host file only the test writes, and a host directory beside it.
struct HostBait {
    file: PathBuf,
    dir: PathBuf,
}

impl HostBait {
    fn new(d: &Daemon) -> Self {
        let file = d.state.path().join("host-file");
        fs::write(&file, "HOST-SECRET\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let dir = d.state.path().join("host-dir");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("shadow"), "host:shadow\n").unwrap();
        Self { file, dir }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot::of(&[&self.file, &self.dir, &self.dir.join("shadow")])
    }
}

/// The hash of `user` in the VPS's /etc/shadow checks against `pw`.
fn hash_is(d: &Daemon, vps: &str, user: &str, pw: &str) -> bool {
    let line = d.sh_ok(vps, &format!("busybox grep ^{user}: /etc/shadow"));
    sha_crypt::sha512_check(pw, line.split(':').nth(1).unwrap_or("")).is_ok()
}

/// Finding 1: on a stopped VPS, passwd wrote `upper/etc/shadow.vzhost-tmp`
/// through whatever the VPS had planted there, as host root.
#[test]
fn passwd_on_a_stopped_vps_never_writes_through_what_it_planted() -> anyhow::Result<()> {
    let d = Daemon::start("hf-stopped")?;
    let bait = HostBait::new(&d);
    let before = bait.snapshot();
    let file = bait.file.display().to_string();
    d.ok(&["create", "a"]);
    d.ok(&["start", "a"]);
    // A stat never waits for a walk of the layer (under TCG, everything
    // takes about ten times as long).
    let quick = Duration::from_secs(if in_vm() { 5 } else { 1 });
    let disk_used = || {
        let started = Instant::now();
        let stat: serde_json::Value =
            serde_json::from_str(&d.ok(&["stat", "a", "-o", "json"])).unwrap();
        let took = started.elapsed();
        assert!(took < quick, "stat took {took:?}");
        stat[0]["disk_used"].as_u64().unwrap()
    };
    disk_used();
    // A trap at the old temp name, and Debian's owner and mode to keep.
    d.sh_ok(
        "a",
        &format!(
            "ln -s {file} /etc/shadow.vzhost-tmp && chgrp 42 /etc/shadow && chmod 640 /etc/shadow"
        ),
    );
    d.ok(&["stop", "a"]);
    let out = d.passwd("a", "root", "first");
    assert!(out.status.success(), "{}", stderr(&out));
    d.ok(&["start", "a"]);
    assert!(hash_is(&d, "a", "root", "first"));
    assert_eq!(d.sh_ok("a", "stat -c '%a %u %g' /etc/shadow"), "640 0 42");
    assert_eq!(d.sh_ok("a", "readlink /etc/shadow.vzhost-tmp"), file);
    // /etc/shadow itself, then all of /etc, made symlinks to the host's.
    let dir = bait.dir.display().to_string();
    for plant in [
        format!("rm /etc/shadow && ln -s {file} /etc/shadow"),
        format!("rm -rf /etc && ln -s {dir} /etc"),
    ] {
        d.sh_ok("a", &format!("{plant} && echo planted"));
        d.ok(&["stop", "a"]);
        let out = d.passwd("a", "root", "second");
        assert!(!out.status.success(), "passwd went through {plant:?}");
        assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
        d.ok(&["start", "a"]);
    }
    assert_eq!(bait.snapshot(), before, "a host file changed");
    Ok(())
}

/// Finding 2 and part of 4: on a running VPS, passwd read
/// /proc/PID/root/etc/{passwd,shadow} through the VPS's symlinks, and ran
/// the VPS's own /bin/sh under the daemon's lock.
#[test]
fn passwd_on_a_running_vps_reads_no_host_file_and_runs_no_vps_binary() -> anyhow::Result<()> {
    let d = Daemon::start("hf-running")?;
    let bait = HostBait::new(&d);
    let before = bait.snapshot();
    d.ok(&["create", "a"]);
    d.ok(&["start", "a"]);
    // A stat never waits for a walk of the layer (under TCG, everything
    // takes about ten times as long).
    let quick = Duration::from_secs(if in_vm() { 5 } else { 1 });
    let disk_used = || {
        let started = Instant::now();
        let stat: serde_json::Value =
            serde_json::from_str(&d.ok(&["stat", "a", "-o", "json"])).unwrap();
        let took = started.elapsed();
        assert!(took < quick, "stat took {took:?}");
        stat[0]["disk_used"].as_u64().unwrap()
    };
    disk_used();
    // A /bin/sh that never ends.
    d.sh_ok("a", "rm /bin/sh && printf '#!/bin/busybox sh\\nexec sleep 600\\n' > /bin/sh && chmod 755 /bin/sh && echo ok");
    let started = Instant::now();
    let out = d.passwd("a", "root", "inside");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let bb = |script: &str| {
        d.vz(&["exec", "a", "--", "/bin/busybox", "sh", "-c", script])
            .unwrap()
    };
    let line = String::from_utf8_lossy(&bb("grep ^root: /etc/shadow").stdout).into_owned();
    assert!(
        sha_crypt::sha512_check("inside", line.trim().split(':').nth(1).unwrap()).is_ok(),
        "{line}"
    );
    // /etc/shadow a symlink to a host file: refused, nothing copied in.
    let file = bait.file.display().to_string();
    assert!(
        bb(&format!("rm /etc/shadow && ln -s {file} /etc/shadow"))
            .status
            .success()
    );
    let out = d.passwd("a", "root", "x");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("symlink"), "{}", stderr(&out));
    let upper = d.root().join("vps/a/disk/upper");
    for e in fs::read_dir(upper.join("etc"))? {
        let p = e?.path();
        if fs::symlink_metadata(&p)?.is_file() {
            assert!(
                !fs::read_to_string(&p)
                    .unwrap_or_default()
                    .contains("HOST-SECRET"),
                "{}",
                p.display()
            );
        }
    }
    // A FIFO for /etc/passwd neither blocks passwd nor anything else.
    assert!(
        bb("rm /etc/shadow && rm /etc/passwd && mkfifo /etc/passwd")
            .status
            .success()
    );
    let started = Instant::now();
    let out = d.passwd("a", "root", "x");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/etc/passwd"), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        bb("rm /etc/passwd && echo 'root:x:0:0::/root:/bin/busybox' > /etc/passwd")
            .status
            .success()
    );
    let out = d.passwd("a", "nosuchuser", "x");
    assert!(
        stderr(&out).contains("no user nosuchuser"),
        "{}",
        stderr(&out)
    );
    assert_eq!(bait.snapshot(), before, "a host file changed");
    Ok(())
}

/// Run `argv` as host uid and gid 65534 with no groups.
fn as_nobody(argv: &[&str]) -> std::io::Result<Output> {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: only setgroups/setresgid/setresuid between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(65534, 65534, 65534) != 0
                || libc::setresuid(65534, 65534, 65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output()
}

/// Finding 3: templates and VPS layers sat under 0755 directories, so any
/// host user could run an imported setuid-root binary or read a VPS's files.
#[test]
fn an_unprivileged_host_user_reaches_no_template_and_no_layer() -> anyhow::Result<()> {
    let mut d = Daemon::start("hf-private")?;
    // Only vzhost's own modes may stand in the way (the test's temp
    // directory is 0700 of its own).
    fs::set_permissions(d.state.path(), fs::Permissions::from_mode(0o755))?;
    d.template_with_init("plain", "#!/bin/sh\nexec /bin/busybox init\n")?;
    let source = d.state.path().join("template-suid");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(d.root().join("templates/plain"))
        .arg(&source)
        .status()?;
    assert!(copied.success());
    fs::copy(source.join("bin/busybox"), source.join("bin/suid-sh"))?;
    fs::set_permissions(
        source.join("bin/suid-sh"),
        fs::Permissions::from_mode(0o4755),
    )?;
    d.ok(&["template", "import", "suid", source.to_str().unwrap()]);
    d.ok(&["create", "a", "--template", "suid"]);
    let suid = d.root().join("templates/suid/bin/suid-sh");
    let layer_file = d.root().join("vps/a/disk/upper/etc/hostname");
    let pwned = d.state.path().join("pwned");
    let watched = [suid.as_path(), layer_file.as_path()];
    let before = Snapshot::of(&watched);
    assert_eq!(
        fs::metadata(&suid)?.mode() & 0o7777,
        0o4755,
        "the template keeps its setuid binary"
    );
    let script = format!("id -u > {}", pwned.display());
    let ran = as_nobody(&[suid.to_str().unwrap(), "sh", "-c", &script]);
    assert_eq!(
        ran.map(|o| o.status.code()).unwrap_err().raw_os_error(),
        Some(libc::EACCES)
    );
    let read = as_nobody(&["/bin/cat", layer_file.to_str().unwrap()])?;
    assert!(
        !read.status.success() && stderr(&read).contains("Permission denied"),
        "{}",
        stderr(&read)
    );
    assert!(!pwned.exists());
    assert_eq!(Snapshot::of(&watched), before);
    for dir in ["", "vps", "templates", "vps/a"] {
        assert_eq!(
            fs::metadata(d.root().join(dir))?.mode() & 0o777,
            0o700,
            "{dir:?}"
        );
    }
    // Loosened by hand, tightened again when the daemon starts.
    fs::set_permissions(d.root().join("vps/a"), fs::Permissions::from_mode(0o755))?;
    d.kill9();
    d.spawn()?;
    assert_eq!(fs::metadata(d.root().join("vps/a"))?.mode() & 0o777, 0o700);
    // The VPS still starts: its PID 1 never looks a path up through them.
    d.ok(&["start", "a"]);
    assert_eq!(d.sh_ok("a", "hostname"), "a");
    Ok(())
}

/// Finding 13: `--template ../../some/host/dir` made any host directory a
/// VPS's lower layer.
#[test]
fn a_template_name_is_never_a_path() -> anyhow::Result<()> {
    let mut d = Daemon::start("hf-tplname")?;
    let host = d.state.path().join("host-root");
    fs::create_dir_all(host.join("sbin"))?;
    fs::write(host.join("sbin/init"), "#!/bin/sh\n")?;
    let before = Snapshot::of(&[&host, &host.join("sbin/init")]);
    let names = [
        "../../host-root".to_owned(),
        host.display().to_string(),
        "..".to_owned(),
    ];
    for name in &names {
        let err = d.fails(&["create", "x", "--template", name]);
        assert!(err.contains("invalid template"), "{name}: {err}");
        let err = d.fails(&["template", "import", name, host.to_str().unwrap()]);
        assert!(err.contains("invalid template"), "{name}: {err}");
    }
    assert_eq!(
        fs::read_dir(d.root().join("vps"))?.count(),
        0,
        "nothing created"
    );
    assert!(!d.cgroup.path.join("x").exists());
    // A spec edited on disk to name a path does not start. The daemon reads
    // the specs when it starts (it alone writes them afterwards): one that
    // does not pass is left out, with the reason in its log.
    d.ok(&["create", "y"]);
    let config = d.root().join("vps/y/config.json");
    let text = fs::read_to_string(&config)?.replace("\"busybox\"", "\"../../host-root\"");
    fs::write(&config, text)?;
    d.kill9();
    d.spawn()?;
    let err = d.fails(&["start", "y"]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(d.log().contains("invalid template"), "{}", d.log());
    assert!(!d.cgroup.path.join("y").exists(), "nothing of y ran");
    assert_eq!(Snapshot::of(&[&host, &host.join("sbin/init")]), before);
    Ok(())
}

/// Findings 4 (disk part), 14 and 15: a VPS's deep tree, FIFO and socket
/// against stat, metrics, `set --disk` and destroy.
#[test]
fn a_deep_tree_a_fifo_and_a_socket_keep_stat_fast_and_destroy_clean() -> anyhow::Result<()> {
    let xfs = XfsMount::new("hardening_files::a_deep_tree_a_fifo_and_a_socket (set --disk)")?;
    let d = match &xfs {
        Some(x) => Daemon::start_in("hf-deep", &x.path())?,
        None => Daemon::start("hf-deep")?,
    };
    d.ok(&["create", "a"]);
    d.ok(&["start", "a"]);
    // A stat never waits for a walk of the layer (under TCG, everything
    // takes about ten times as long).
    let quick = Duration::from_secs(if in_vm() { 5 } else { 1 });
    let disk_used = || {
        let started = Instant::now();
        let stat: serde_json::Value =
            serde_json::from_str(&d.ok(&["stat", "a", "-o", "json"])).unwrap();
        let took = started.elapsed();
        assert!(took < quick, "stat took {took:?}");
        stat[0]["disk_used"].as_u64().unwrap()
    };
    disk_used();
    // 3000 levels (6000 characters: deeper than any path can name),
    // 100 at a time, with 1 MiB at the bottom.
    let made = d.sh_ok(
        "a",
        "p=d; i=1; while [ $i -lt 100 ]; do p=$p/d; i=$((i+1)); done; cd /root; \
         i=0; while [ $i -lt 30 ]; do mkdir -p $p && cd -P $p || exit 1; i=$((i+1)); done; \
         dd if=/dev/zero of=bottom bs=1M count=1 2>/dev/null && mkfifo /root/fifo && echo made",
    );
    assert_eq!(made, "made");
    let upper = d.root().join("vps/a/disk/upper");
    drop(std::os::unix::net::UnixListener::bind(
        upper.join("root/socket"),
    )?);
    let deadline = Instant::now() + Duration::from_secs(if in_vm() { 120 } else { 30 });
    while disk_used() < 1 << 20 {
        assert!(
            Instant::now() < deadline,
            "the walk never counted the bottom file"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let started = Instant::now();
    let (code, _, _) = d.http_get(crate::metrics::ADDR, "/metrics", "*/*")?;
    assert_eq!(code, 200);
    assert!(
        started.elapsed() < quick,
        "scrape took {:?}",
        started.elapsed()
    );
    // Where the kernel has project quotas (XfsMount recorded the skip
    // otherwise): the limit goes onto every file, never opening the FIFO.
    if xfs.is_some() {
        d.ok(&["set", "a", "--disk", "256M"]);
        assert_eq!(d.sh_ok("a", "echo fine"), "fine");
    }
    d.ok(&["destroy", "--force", "a"]);
    let left: Vec<_> = fs::read_dir(d.root().join("vps"))?
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in <root>/vps: {left:?}");
    Ok(())
}

/// An init that writes 50 MB to its stdout (the console) in the
/// background, then a marker, and runs busybox init meanwhile.
const LOUD_INIT: &str = "#!/bin/sh\n(dd if=/dev/zero bs=1M count=50 2>/dev/null | tr '\\0' x; echo marker-end) &\nexec /bin/busybox init\n";

/// Finding 11: console.log grew without bound, outside the disk quota.
#[test]
fn the_console_stays_within_its_cap() -> anyhow::Result<()> {
    const CAP: u64 = 1 << 20;
    let d = Daemon::start("hf-console")?;
    d.template_with_init("loud", LOUD_INIT)?;
    d.ok(&["create", "a", "--template", "loud"]);
    d.ok(&["start", "a"]);
    let log = d.root().join("vps/a/disk/console.log");
    let old = log.with_extension("log.1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read(&log)
        .unwrap_or_default()
        .ends_with(b"marker-end\n")
    {
        assert!(
            Instant::now() < deadline,
            "the console never showed the marker"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for f in [&log, &old] {
        let len = fs::metadata(f)?.len();
        assert!(len <= CAP, "{} holds {len} bytes", f.display());
    }
    assert!(fs::read(&old)?.iter().all(|&b| b == b'x'));
    assert!(
        !d.root().join("vps/a/console.log").exists(),
        "nothing beside the disk"
    );
    assert_eq!(fs::metadata(&log)?.mode() & 0o777, 0o600);
    assert_eq!(d.sh_ok("a", "echo alive"), "alive");
    Ok(())
}
