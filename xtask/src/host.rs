//! A `vzhost daemon` of xtask's own (demo, benchmarks): private state,
//! policies and pins, its own cgroup and network namespace, so nothing it
//! does reaches this machine's interfaces or cgroups; removed on drop with
//! every VPS it made.
use std::{
    fs,
    io::Read as _,
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The shipped default policy.
const SHIPPED_DEFAULT: &str = include_str!("../../policies/default.yaml");

pub struct Host {
    vzhost: PathBuf,
    pub state: PathBuf,
    pub cgroup: PathBuf,
    daemon: Option<Child>,
}

impl Host {
    /// `degraded`: this kernel refuses BPF LSM, so the shipped default
    /// policy (which fails closed) is run with `allow_degraded: true`.
    pub fn start(vzhost: &Path, purpose: &str, degraded: bool) -> anyhow::Result<Self> {
        Self::start_logging(vzhost, purpose, degraded, None)
    }

    /// [`Host::start`], the daemon logging at `log` (a `VZHOST_LOG` filter)
    /// to `daemon.log` in its state directory.
    pub fn start_logging(
        vzhost: &Path,
        purpose: &str,
        degraded: bool,
        log: Option<&str>,
    ) -> anyhow::Result<Self> {
        let tag = format!("vzhost-{purpose}-{}", std::process::id());
        let state = std::env::temp_dir().join(&tag);
        fs::create_dir_all(&state)?;
        let cgroup = own_v2_cgroup()?.join(&tag);
        fs::create_dir(&cgroup)
            .with_context(|| format!("create the {purpose} cgroup {}", cgroup.display()))?;
        let mut host = Self {
            vzhost: vzhost.to_owned(),
            state,
            cgroup,
            daemon: None,
        };
        if degraded {
            fs::create_dir_all(host.policies())?;
            fs::write(
                host.policies().join("default.yaml"),
                SHIPPED_DEFAULT.replace("allow_degraded: false", "allow_degraded: true"),
            )?;
            println!(
                "(this kernel refuses BPF LSM programs: the shipped default policy would keep \
                 VPSs from starting, so the {purpose} runs it with allow_degraded: true; the \
                 cgroup hooks still apply)"
            );
        }
        let log_file = fs::File::create(host.state.join("daemon.log"))?;
        let procs = host.cgroup.join("cgroup.procs");
        let mut cmd = Command::new(vzhost);
        cmd.arg("daemon")
            .arg("--root")
            .arg(host.state.join("root"))
            .arg("--policies")
            .arg(host.policies())
            .arg("--pins")
            .arg(host.pins())
            .env("VZHOST_SOCKET", host.socket())
            .envs(log.map(|l| ("VZHOST_LOG", l)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        // SAFETY: a write to cgroupfs and unshare(2) between fork and exec:
        // the demo's daemon gets a network namespace of its own, so its
        // bridge and veths never touch this machine's interfaces.
        unsafe {
            cmd.pre_exec(move || {
                fs::write(&procs, "0")?;
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        host.daemon = Some(cmd.spawn().context("start vzhost daemon")?);
        // Loopback up in its namespace, as on any host: /metrics is there.
        let pid = host.daemon_pid().expect("just spawned").to_string();
        let _ = Command::new("nsenter")
            .args(["-t", &pid, "-n", "ip", "link", "set", "lo", "up"])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while host.quiet(&["list"]).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "the {purpose} daemon did not start; see {}/daemon.log",
                    host.state.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(host)
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// The last `lines` lines of the daemon's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.state.join("daemon.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn socket(&self) -> PathBuf {
        self.state.join("vzhost.sock")
    }

    pub fn policies(&self) -> PathBuf {
        self.state.join("policies")
    }

    pub fn pins(&self) -> PathBuf {
        PathBuf::from("/sys/fs/bpf").join(self.state.file_name().expect("named"))
    }

    /// The v2 cgroup of VPS `name`: `vz-<daemon identity>-<name>` in the
    /// daemon's cgroup (the only daemon there, so the identity need not be
    /// derived here).
    pub fn vps_cgroup(&self, name: &str) -> anyhow::Result<PathBuf> {
        let suffix = format!("-{name}");
        fs::read_dir(&self.cgroup)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|f| f.to_str())
                    .and_then(|f| f.strip_prefix("vz-"))
                    .and_then(|f| f.strip_suffix(&suffix))
                    .is_some_and(|id| !id.contains('-'))
            })
            .with_context(|| format!("no cgroup of VPS {name} in {}", self.cgroup.display()))
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.vzhost);
        c.args(args).env("VZHOST_SOCKET", self.socket());
        c
    }

    /// Show and run `vzhost ARGS`, output to the terminal.
    pub fn show(&self, args: &[&str]) -> anyhow::Result<i32> {
        println!("$ vzhost {}", args.join(" "));
        let status = self.cmd(args).status()?;
        Ok(status.code().unwrap_or(1))
    }

    /// Show and run a shell script inside VPS `name`.
    pub fn sh(&self, name: &str, script: &str) -> anyhow::Result<i32> {
        self.show(&["exec", name, "--", "sh", "-c", script])
    }

    /// Wait until sshd at `ip` sends its banner; seen from the daemon's
    /// network namespace (where the bridge is).
    pub fn await_sshd(&self, ip: &str, limit: Duration) -> anyhow::Result<()> {
        let daemon = self.daemon_pid().context("the daemon runs")?;
        let addr: SocketAddr = format!("{ip}:22").parse()?;
        in_netns_of(daemon, move || {
            let deadline = Instant::now() + limit;
            loop {
                let mut banner = [0u8; 8];
                let got = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).and_then(
                    |mut s| {
                        s.set_read_timeout(Some(Duration::from_secs(5)))?;
                        s.read_exact(&mut banner)
                    },
                );
                if got.is_ok() && banner.starts_with(b"SSH-2.0") {
                    return Ok(());
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "no sshd banner from {addr} within {limit:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    }

    pub fn quiet(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cmd(args).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let names: Vec<String> = self
            .quiet(&["list", "-o", "json"])
            .ok()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .and_then(|v| {
                v.as_array().map(|a| {
                    a.iter()
                        .filter_map(|x| x["name"].as_str().map(str::to_owned))
                        .collect()
                })
            })
            .unwrap_or_default();
        for name in names {
            let _ = self.quiet(&["destroy", "--force", &name]);
        }
        if let Some(mut d) = self.daemon.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let _ = d.wait();
        }
        let leaf = self.cgroup.join("vzhost-daemon");
        let _ = fs::remove_dir(&leaf);
        let _ = fs::remove_dir(&self.cgroup);
        let _ = fs::remove_dir_all(&self.state);
        let _ = fs::remove_dir_all(self.pins());
    }
}

fn own_v2_cgroup() -> anyhow::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let root = mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split(' ').nth(4).map(PathBuf::from))?
        })
        .context("no cgroup v2 hierarchy mounted")?;
    let own = fs::read_to_string("/proc/self/cgroup")?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .context("no cgroup v2 membership")?;
    Ok(root.join(own.trim_start_matches('/')))
}

/// Run `work` on a thread of its own inside the network namespace of `pid`.
pub fn in_netns_of<T: Send + 'static>(
    pid: u32,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let ns = fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::spawn(move || {
        // SAFETY: setns on a thread this closure owns; it moves only it.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns");
        }
        work()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread in the network namespace of {pid} panicked"))?
}
