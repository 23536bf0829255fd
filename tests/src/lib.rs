//! Helpers for vzhost's integration tests: RAII guards for what the tests
//! create, running a process inside a cgroup, and feature gates that skip
//! on a host without a feature but never inside the test VM.
use std::{
    fs,
    io::Write as _,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

mod maps;
mod modes;
mod policies;

pub use maps::ksal_map_entries;
pub use modes::{NetMode, current_mode, in_mode};

/// A static program making the system calls busybox does not
/// (`tests/probe/vzprobe.c`), to place in a template.
pub const PROBE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vzprobe"));

/// Wait until `done` holds or `limit` passes; whether it held.
pub fn wait_for(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    done()
}

/// Whether this process runs inside the `cargo xtask vm` guest.
pub fn in_vm() -> bool {
    std::env::var_os("VZHOST_IN_VM").is_some()
}

/// The prepared Debian template (a root directory) the distribution tests
/// import: `$VZHOST_DEBIAN_TEMPLATE`, which `cargo xtask test` sets to the
/// image it builds once and caches; in the VM, the read-only second disk.
/// Tests never run debootstrap themselves.
pub fn debian_template() -> PathBuf {
    let path = std::env::var_os("VZHOST_DEBIAN_TEMPLATE")
        .map_or_else(|| PathBuf::from("/images/debian-bookworm"), PathBuf::from);
    assert!(
        path.join("etc/debian_version").exists(),
        "no prepared Debian template at {} (run the tests with `cargo xtask test`, \
         which builds it, or set VZHOST_DEBIAN_TEMPLATE to one made by \
         `vzhost template build debian`)",
        path.display()
    );
    path
}

/// Record that `test` did not run here and why; `cargo xtask test` counts
/// these lines as skipped, not passed. Never called inside the VM.
pub fn skip(test: &str, why: &str) {
    assert!(!in_vm(), "{test} must not skip inside the VM: {why}");
    println!("vzhost-skip: {test}: {why}");
}

/// Whether BPF LSM programs can be loaded here. Inside the VM a missing
/// BPF LSM is a failure, never a skip.
pub fn lsm_available(test: &str) -> bool {
    match vzhost::ksal::probe_lsm() {
        Ok(()) => true,
        Err(e) if in_vm() => panic!("{test}: BPF LSM must work in the test VM: {e}"),
        Err(e) => {
            skip(test, &format!("runs in the VM: {e}"));
            false
        }
    }
}

/// A cgroup v2 directory created under this process's own cgroup, removed
/// (with every process in it killed) on drop.
pub struct CgroupGuard {
    pub path: PathBuf,
    /// Its cgroup v2 id.
    pub id: u64,
    /// Its depth in the v2 hierarchy.
    pub level: u32,
}

impl CgroupGuard {
    /// A new child of the test process's own v2 cgroup.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let layout = vzhost::cgroup::Layout::detect()?;
        let own = vzhost::cgroup::v2_path_of(None)?;
        let parent = layout.unified_root()?.join(own.trim_start_matches('/'));
        let path = parent.join(format!("{name}-{}", std::process::id()));
        Self::create(path, vzhost::cgroup::depth(&own) + 1)
    }

    fn create(path: PathBuf, level: u32) -> anyhow::Result<Self> {
        fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        let id = vzhost::cgroup::id_of(&path)?;
        Ok(Self { path, id, level })
    }

    /// A child cgroup inside this one (removed with it).
    pub fn child(&self, name: &str) -> anyhow::Result<Self> {
        Self::create(self.path.join(name), self.level + 1)
    }

    /// Run `argv` with the child process placed in this cgroup before exec.
    pub fn run(&self, argv: &[&str]) -> anyhow::Result<Output> {
        run_in_cgroup(&self.path, argv)
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.path);
    }
}

fn remove_cgroup_tree(path: &Path) {
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::write(path.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::remove_dir(path).is_err() && Instant::now() < deadline && path.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `argv`, moving the child into the cgroup at `dir` before it execs.
pub fn run_in_cgroup(dir: &Path, argv: &[&str]) -> anyhow::Result<Output> {
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .with_context(|| format!("open {}/cgroup.procs", dir.display()))?;
    let fd = procs.as_raw_fd();
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: only write(2) runs between fork and exec: async-signal-safe,
    // on an fd that stays open (owned by `procs`) until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // "0" moves the writing process itself.
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().with_context(|| format!("run {argv:?}"))?;
    drop(procs);
    Ok(out)
}

/// Run `argv` in the network namespace `ns`.
pub fn run_in_netns(ns: &fs::File, argv: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null());
    output_in_netns(ns, cmd)
}

/// The output of `cmd`, run in the network namespace `ns`.
pub fn output_in_netns(ns: &fs::File, mut cmd: Command) -> anyhow::Result<Output> {
    let ns_fd = ns.as_raw_fd();
    // SAFETY: only setns(2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output()
        .with_context(|| format!("run {cmd:?} in a test network namespace"))
}

/// A new network namespace, held open by the returned file (made by a
/// short-lived child so this process's own namespace is untouched).
pub fn new_netns() -> anyhow::Result<fs::File> {
    let mut child = Command::new("/bin/sh")
        .args(["-c", "read _"])
        .stdin(Stdio::piped())
        .spawn_in_new_netns()?;
    let ns = fs::File::open(format!("/proc/{}/ns/net", child.id()));
    drop(child.stdin.take());
    let _ = child.wait();
    let ns = ns?;
    Ok(ns)
}

trait SpawnInNetns {
    fn spawn_in_new_netns(&mut self) -> anyhow::Result<std::process::Child>;
}

impl SpawnInNetns for Command {
    fn spawn_in_new_netns(&mut self) -> anyhow::Result<std::process::Child> {
        // SAFETY: only unshare(2) between fork and exec.
        unsafe {
            self.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.spawn()
            .context("spawn a process in a new network namespace")
    }
}

/// A scratch directory with a few files, removed on drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
        })
    }

    pub fn file(&self, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        let mut f = fs::File::create(&path)?;
        f.write_all(contents.as_bytes())?;
        Ok(path)
    }
}

/// stderr of `out` as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The shipped default policy, allowed to start without the LSM hooks.
pub fn degraded_default() -> String {
    vzhost::policy::BUILTIN_DEFAULT.replace("allow_degraded: false", "allow_degraded: true")
}

/// The vzhost binary under test.
pub fn vzhost_bin() -> PathBuf {
    std::env::var_os("VZHOST_BIN").map_or_else(
        || {
            if in_vm() {
                PathBuf::from("/usr/local/bin/vzhost")
            } else {
                PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../target/debug/vzhost"
                ))
            }
        },
        PathBuf::from,
    )
}

/// A `vzhost daemon` of the test's own: private state directory, socket
/// and cgroup. Dropping it destroys every VPS, stops the daemon and removes
/// its cgroups, so nothing outlives the test.
pub struct Daemon {
    pub state: tempfile::TempDir,
    /// Shared by daemons started beside each other.
    pub cgroup: std::sync::Arc<CgroupGuard>,
    child: Option<std::process::Child>,
    args: Vec<String>,
    /// The network namespace the daemon runs in: made for the test, so no
    /// bridge or veth ever touches a real interface.
    netns: Option<fs::File>,
}

impl Daemon {
    pub fn start(name: &str) -> anyhow::Result<Self> {
        Self::start_with(name, &std::env::temp_dir(), &[])
    }

    /// A daemon whose state lives under `base` (e.g. a test filesystem).
    pub fn start_in(name: &str, base: &Path) -> anyhow::Result<Self> {
        Self::start_with(name, base, &[])
    }

    /// A daemon with extra `vzhost daemon` arguments.
    pub fn start_with(name: &str, base: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let cgroup = match current_mode() {
            Some(mode) => CgroupGuard::new(&format!("vzt-{name}-{mode}"))?,
            None => CgroupGuard::new(&format!("vzt-{name}"))?,
        };
        Self::start_in_cgroup(std::sync::Arc::new(cgroup), base, args)
    }

    /// A second daemon of its own state, started from `other`'s cgroup (as
    /// two services of one delegated unit would be).
    pub fn start_beside(other: &Daemon) -> anyhow::Result<Self> {
        Self::start_in_cgroup(other.cgroup.clone(), &std::env::temp_dir(), &[])
    }

    fn start_in_cgroup(
        cgroup: std::sync::Arc<CgroupGuard>,
        base: &Path,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let state = tempfile::Builder::new()
            .prefix("vzhost-test-")
            .tempdir_in(base)?;
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        if let Some(mode) = current_mode()
            && !args.iter().any(|a| a == "--network")
        {
            args.extend(["--network".to_owned(), mode.to_string()]);
        }
        let mut d = Self {
            state,
            cgroup,
            child: None,
            args,
            netns: None,
        };
        d.spawn()?;
        Ok(d)
    }

    pub fn root(&self) -> PathBuf {
        self.state.path().join("root")
    }

    /// Where this daemon pins its KSAL maps and links (on bpffs).
    pub fn pins(&self) -> PathBuf {
        let state = self.state.path().file_name().unwrap().to_string_lossy();
        PathBuf::from("/sys/fs/bpf").join(state.as_ref())
    }

    /// The daemon's policies directory (empty: the built-in default).
    pub fn policies(&self) -> PathBuf {
        self.state.path().join("policies")
    }

    pub fn socket(&self) -> PathBuf {
        self.state.path().join("vzhost.sock")
    }

    /// Start (or restart) the daemon process inside the test's cgroup.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        // A restarted daemon goes where the first one moved itself, as a
        // supervisor with delegation (systemd's DelegateSubgroup=) would do.
        let leaf = self.cgroup.path.join(vzhost::cgroup::manager::DAEMON_LEAF);
        let home = if leaf.is_dir() {
            leaf
        } else {
            self.cgroup.path.clone()
        };
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(home.join("cgroup.procs"))?;
        let fd = procs.as_raw_fd();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.path().join("daemon.log"))?;
        // Where the kernel cannot run the LSM hooks the shipped default
        // policy needs, its VPSs would not start (it fails closed): the
        // test host runs them degraded, as an administrator of such a host
        // would choose to. Tests that need another default write their own.
        let default = self.policies().join("default.yaml");
        if !default.exists() && vzhost::ksal::probe_lsm().is_err() {
            fs::create_dir_all(self.policies())?;
            fs::write(&default, degraded_default())?;
        }
        let netns = match self.netns.take() {
            Some(ns) => ns,
            None => {
                // Loopback up, as on any real host (the metrics endpoint
                // listens there).
                let ns = new_netns()?;
                let up = run_in_netns(&ns, &["ip", "link", "set", "lo", "up"])?;
                anyhow::ensure!(up.status.success(), "lo up: {}", stderr(&up));
                ns
            }
        };
        let ns_fd = netns.as_raw_fd();
        let mut cmd = Command::new(vzhost_bin());
        cmd.arg("daemon")
            .args(&self.args)
            .arg("--root")
            .arg(self.root())
            .arg("--policies")
            .arg(self.policies())
            .arg("--pins")
            .arg(self.pins())
            .env("VZHOST_SOCKET", self.socket())
            .env("VZHOST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: only write(2) and setns(2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = cmd.spawn().context("spawn vzhost daemon");
        self.netns = Some(netns);
        self.child = Some(spawned?);
        // Under the VM's TCG emulation the kernel's verifier alone takes
        // some 15 s over the KSAL's programs.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.vz(&["list"]).is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                anyhow::bail!("the daemon exited with {status}; its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("the daemon did not come up; its log:\n{}", self.log())
    }

    /// The network namespace the daemon runs in ("the host's").
    pub fn netns(&self) -> Option<&fs::File> {
        self.netns.as_ref()
    }

    /// Run `argv` on "the host": in the daemon's network namespace.
    pub fn host_run(&self, argv: &[&str]) -> anyhow::Result<Output> {
        run_in_netns(self.netns.as_ref().context("no daemon netns")?, argv)
    }

    /// Start `argv` in the background on "the host" (the daemon's network
    /// namespace); the caller kills it. Its stdin is a pipe held open by
    /// the returned child: a server given an empty stdin (nc) would close
    /// its sending half at once, racing the client's first write.
    pub fn host_spawn(&self, argv: &[&str], log: &Path) -> anyhow::Result<std::process::Child> {
        let ns_fd = self.netns.as_ref().context("no daemon netns")?.as_raw_fd();
        let log = fs::File::create(log)?;
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: only setns(2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().with_context(|| format!("spawn {argv:?}"))
    }

    /// Wait up to 10 s until something listens on TCP `port` on "the host"
    /// (a server just spawned there may take a while on a loaded machine).
    pub fn wait_listening(&self, port: u16) {
        let wanted = format!(":{port} ");
        wait_for(Duration::from_secs(10), || {
            self.host_run(&["/bin/busybox", "netstat", "-ltn"])
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&wanted))
        });
    }

    /// `GET path` from `addr` on "the host", as (status code, headers,
    /// body); `accept` is sent as the Accept header.
    pub fn http_get(
        &self,
        addr: &str,
        path: &str,
        accept: &str,
    ) -> anyhow::Result<(u16, String, String)> {
        let ns = self
            .netns
            .as_ref()
            .context("no daemon netns")?
            .try_clone()?;
        let (addr, request) = (
            addr.to_owned(),
            format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
            ),
        );
        // setns of a network namespace moves only the calling thread.
        std::thread::spawn(move || -> anyhow::Result<(u16, String, String)> {
            // SAFETY: setns on a thread this closure owns.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error()).context("setns");
            }
            let mut s = std::net::TcpStream::connect(&addr)
                .with_context(|| format!("connect to {addr}"))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.write_all(request.as_bytes())?;
            let mut reply = String::new();
            std::io::Read::read_to_string(&mut s, &mut reply)?;
            let (head, body) = reply.split_once("\r\n\r\n").context("no HTTP head")?;
            let code = head
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .context("no HTTP status")?;
            Ok((code, head.to_owned(), body.to_owned()))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("HTTP thread panicked"))?
    }

    /// Run `work` as root of running VPS `vps` (its cgroup, network and
    /// user namespaces, uid 0 there) in a child process, between fork and
    /// exec of /bin/true: the action is the VPS's own, with no tool
    /// inside it needed. Returns the error `work` failed with.
    pub fn as_vps_root(
        &self,
        vps: &str,
        work: impl Fn() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> std::io::Result<()> {
        let pid = self.status(vps).expect("the VPS exists")["init_pid"]
            .as_u64()
            .expect("the VPS runs");
        self.as_root_of(vps, pid, work)
    }

    /// `as_vps_root` for VPS `vps` whose init is `pid` (no daemon needed).
    pub fn as_root_of(
        &self,
        vps: &str,
        pid: u64,
        work: impl Fn() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> std::io::Result<()> {
        let open = |ns: &str| fs::File::open(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let (net, user) = (open("net"), open("user"));
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(self.vps_cgroup(vps).join("cgroup.procs"))
            .unwrap();
        let (net_fd, user_fd, procs_fd) = (net.as_raw_fd(), user.as_raw_fd(), procs.as_raw_fd());
        let mut cmd = Command::new("/bin/true");
        // SAFETY: only raw syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let ok = |r: libc::c_int| {
                    if r < 0 {
                        Err(std::io::Error::last_os_error())
                    } else {
                        Ok(())
                    }
                };
                ok(libc::write(procs_fd, b"0".as_ptr().cast(), 1) as libc::c_int)?;
                ok(libc::setns(net_fd, libc::CLONE_NEWNET))?;
                ok(libc::setns(user_fd, libc::CLONE_NEWUSER))?;
                ok(libc::setgroups(0, std::ptr::null()))?;
                ok(libc::setresgid(0, 0, 0))?;
                ok(libc::setresuid(0, 0, 0))?;
                work()
            });
        }
        let result = cmd.status().map(|_| ());
        drop((net, user, procs));
        result
    }

    /// `vzhost events NAME -o json`.
    pub fn events(&self, vps: &str) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["events", vps, "-o", "json"])).expect("events json")
    }

    /// The latest event of `vps` from `hook`, waiting up to 5 s for the
    /// daemon's reader to collect it from the kernel's ring buffer.
    pub fn await_event(&self, vps: &str, hook: &str) -> Option<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = self
                .events(vps)
                .into_iter()
                .rev()
                .find(|e| e["hook"] == hook);
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.state.path().join("daemon.log")).unwrap_or_default()
    }

    /// Kill the daemon with SIGKILL (its VPSs must survive).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the daemon process again with `args` (replacing those it was
    /// started with) instead of the extra arguments it had.
    pub fn spawn_with(&mut self, args: &[&str]) -> anyhow::Result<()> {
        self.args = args.iter().map(|a| (*a).to_owned()).collect();
        self.spawn()
    }

    /// Run `vzhost ARGS` against this daemon.
    pub fn vz(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(vzhost_bin())
            .args(args)
            .env("VZHOST_SOCKET", self.socket())
            .stdin(Stdio::null())
            .output()
            .context("run vzhost")
    }

    /// Run `vzhost ARGS`, requiring success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.vz(args).expect("run vzhost");
        assert!(
            out.status.success(),
            "vzhost {args:?} failed ({}): {}\ndaemon log:\n{}",
            out.status,
            stderr(&out),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `vzhost ARGS`, requiring failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.vz(args).expect("run vzhost");
        assert!(!out.status.success(), "vzhost {args:?} should have failed");
        stderr(&out)
    }

    /// `vzhost exec NAME -- sh -c SCRIPT`, returning the output.
    pub fn sh(&self, name: &str, script: &str) -> Output {
        self.vz(&["exec", name, "--", "sh", "-c", script])
            .expect("run vzhost exec")
    }

    /// stdout of a script that must succeed in the VPS.
    pub fn sh_ok(&self, name: &str, script: &str) -> String {
        let out = self.sh(name, script);
        assert!(
            out.status.success(),
            "{script:?} in {name} failed: {}",
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Import template `name`: a copy of the built-in busybox template
    /// whose `/sbin/init` is the shell script `init`.
    pub fn template_with_init(&self, name: &str, init: &str) -> anyhow::Result<()> {
        self.template_with(name, init, &[])
    }

    /// [`Self::template_with_init`] plus executable `files` (path in the
    /// template, contents), such as [`PROBE`].
    pub fn template_with(
        &self,
        name: &str,
        init: &str,
        files: &[(&str, &[u8])],
    ) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        // The built-in template appears on first use.
        if !self.root().join("templates/busybox").exists() {
            self.ok(&["create", "template-seed"]);
            self.ok(&["destroy", "template-seed"]);
        }
        let dir = self.state.path().join(format!("template-{name}"));
        let copied = Command::new("cp")
            .arg("-a")
            .arg(self.root().join("templates/busybox"))
            .arg(&dir)
            .status()?;
        anyhow::ensure!(copied.success(), "cp -a of the busybox template failed");
        for (file, body) in [("sbin/init", init.as_bytes())]
            .into_iter()
            .chain(files.iter().copied())
        {
            let path = dir.join(file);
            let _ = fs::remove_file(&path);
            fs::write(&path, body)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        }
        self.ok(&[
            "template",
            "import",
            name,
            dir.to_str().context("UTF-8 path")?,
        ]);
        Ok(())
    }

    /// `vzhost passwd VPS USER` with `pw` given on stdin.
    pub fn passwd(&self, vps: &str, user: &str, pw: &str) -> Output {
        let mut c = Command::new(vzhost_bin())
            .args(["passwd", vps, user])
            .env("VZHOST_SOCKET", self.socket())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run vzhost passwd");
        c.stdin
            .take()
            .expect("piped")
            .write_all(format!("{pw}\n").as_bytes())
            .expect("write the password");
        c.wait_with_output().expect("vzhost passwd")
    }

    /// The PID (on the host) of `vps`'s init while it runs.
    pub fn init_pid(&self, vps: &str) -> Option<u64> {
        self.status(vps).and_then(|s| s["init_pid"].as_u64())
    }

    /// `vzhost list -o json` as values.
    pub fn list(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["list", "-o", "json"])).expect("list json")
    }

    pub fn status(&self, name: &str) -> Option<serde_json::Value> {
        self.list().into_iter().find(|v| v["name"] == name)
    }

    /// This daemon's identity, which its cgroup names carry.
    pub fn identity(&self) -> vzhost::model::DaemonId {
        let root = fs::canonicalize(self.root()).expect("the daemon's root exists");
        vzhost::model::DaemonId::of_root(&root)
    }

    /// The network mode this daemon runs in, as its state keeps it.
    pub fn network_mode(&self) -> NetMode {
        vzhost::net::stored_mode(&self.root())
            .expect("the network mode file reads")
            .expect("the daemon stored its network mode")
    }

    /// The host-side veth of VPS number `id` of this daemon.
    pub fn veth(&self, id: u32) -> String {
        vzhost::net::NetConfig::new("vzbr0", "10.213.0.0/16")
            .expect("valid")
            .tagged(&self.identity())
            .host_veth(id)
    }

    /// The v2 cgroup of VPS `vps` (what the KSAL keys on).
    pub fn vps_cgroup(&self, vps: &str) -> PathBuf {
        self.cgroup
            .path
            .join(vzhost::cgroup::manager::v2_name(&self.identity(), vps))
    }

    /// Where this daemon's VPS cgroups live for `controller`: its test
    /// cgroup in v2, or its own directory in the v1 hierarchy.
    pub fn controller_parent(&self, controller: &str) -> Option<PathBuf> {
        let layout = vzhost::cgroup::Layout::detect().ok()?;
        if layout.has_v2(controller) {
            return Some(self.cgroup.path.clone());
        }
        Some(
            vzhost::cgroup::manager::v1_dir_of(&layout, controller)?
                .join(vzhost::cgroup::manager::v1_parent_name(&self.identity())),
        )
    }

    /// Contents of a controller file of VPS `vps`.
    pub fn cgroup_file(&self, controller: &str, vps: &str, file: &str) -> String {
        let parent = self
            .controller_parent(controller)
            .unwrap_or_else(|| panic!("no {controller} controller on this host"));
        let dir = if parent == self.cgroup.path {
            self.vps_cgroup(vps)
        } else {
            parent.join(vps)
        };
        fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("read {}/{file}: {e}", dir.display()))
    }

    /// The v1 directories this daemon makes on hybrid hosts.
    fn v1_parents(&self) -> Vec<PathBuf> {
        vzhost::cgroup::manager::CONTROLLERS
            .iter()
            .filter_map(|c| self.controller_parent(c))
            .filter(|p| *p != self.cgroup.path)
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_none() {
            let _ = self.spawn();
        }
        for v in self.list_quietly() {
            if let Some(name) = v["name"].as_str() {
                let _ = self.vz(&["destroy", "--force", name]);
            }
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        // Whatever a failed test left: kill and remove.
        for dir in self.v1_parents() {
            remove_cgroup_tree(&dir);
        }
        // Its pins (and with them every program it attached).
        let _ = fs::remove_dir_all(self.pins());
    }
}

impl Daemon {
    fn list_quietly(&self) -> Vec<serde_json::Value> {
        self.vz(&["list", "-o", "json"])
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or_default()
    }
}
