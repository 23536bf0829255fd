//! `cargo xtask demo`: a daemon with two VPSs on the built-in busybox
//! template on this machine (private state, its own cgroup, cleaned up
//! afterwards), then the KSAL's LSM enforcement, natively where the kernel
//! allows BPF LSM programs and otherwise in the VM.
use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{setup, vm};

/// The demo's daemon, its state and its cgroup; all removed on drop.
struct DemoHost {
    vzhost: PathBuf,
    state: PathBuf,
    cgroup: PathBuf,
    daemon: Option<Child>,
}

impl DemoHost {
    /// `degraded`: this kernel refuses BPF LSM, so the shipped default
    /// policy (which fails closed) is run with `allow_degraded: true`.
    fn start(vzhost: &Path, degraded: bool) -> anyhow::Result<Self> {
        let state = std::env::temp_dir().join(format!("vzhost-demo-{}", std::process::id()));
        fs::create_dir_all(&state)?;
        let cgroup = own_v2_cgroup()?.join(format!("vzhost-demo-{}", std::process::id()));
        fs::create_dir(&cgroup)
            .with_context(|| format!("create demo cgroup {}", cgroup.display()))?;
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
                 VPSs from starting, so the demo runs it with allow_degraded: true; the \
                 cgroup hooks still apply, the LSM part is shown in the VM below)"
            );
        }
        let log = fs::File::create(host.state.join("daemon.log"))?;
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
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
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
        let deadline = Instant::now() + Duration::from_secs(20);
        while host.quiet(&["list"]).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "the demo daemon did not start; see {}/daemon.log",
                    host.state.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(host)
    }

    fn socket(&self) -> PathBuf {
        self.state.join("vzhost.sock")
    }

    fn policies(&self) -> PathBuf {
        self.state.join("policies")
    }

    fn pins(&self) -> PathBuf {
        PathBuf::from("/sys/fs/bpf").join(self.state.file_name().expect("named"))
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.vzhost);
        c.args(args).env("VZHOST_SOCKET", self.socket());
        c
    }

    /// Show and run `vzhost ARGS`, output to the terminal.
    fn show(&self, args: &[&str]) -> anyhow::Result<i32> {
        println!("$ vzhost {}", args.join(" "));
        let status = self.cmd(args).status()?;
        Ok(status.code().unwrap_or(1))
    }

    /// Show and run a shell script inside VPS `name`.
    fn sh(&self, name: &str, script: &str) -> anyhow::Result<i32> {
        self.show(&["exec", name, "--", "sh", "-c", script])
    }

    fn quiet(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cmd(args).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for DemoHost {
    fn drop(&mut self) {
        for name in ["web", "db"] {
            let _ = self.quiet(&["destroy", "--force", name]);
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

/// The shipped default policy.
const SHIPPED_DEFAULT: &str = include_str!("../../policies/default.yaml");

fn partitions(vzhost: &Path, degraded: bool) -> anyhow::Result<()> {
    println!("\n==== Two VPSs from the busybox template, side by side ====");
    let host = DemoHost::start(vzhost, degraded)?;
    host.show(&[
        "create",
        "web",
        "--hostname",
        "web.example",
        "--memory",
        "128M",
        "--pids",
        "30",
    ])?;
    host.show(&["create", "db", "--hostname", "db.example", "--cpus", "0.5"])?;
    host.show(&["start", "web"])?;
    host.show(&["start", "db"])?;
    host.show(&["list"])?;
    host.sh(
        "web",
        "echo \"I am $(hostname), PID 1 is $(cat /proc/1/comm)\"; ps",
    )?;
    host.sh("db", "echo secret > /root/data; ls -l /root/data")?;
    let seen = host.show(&["exec", "web", "--", "ls", "/root/data"])?;
    println!("(web cannot see db's file: exit {seen})");
    println!("\n-- each has its own address on the bridge; the KSAL keeps it to that address --");
    host.sh("db", "httpd -p 0.0.0.0:80 -h /root && echo db serves /root")?;
    let list: serde_json::Value = serde_json::from_str(&host.quiet(&["list", "-o", "json"])?)?;
    let db_ip = list
        .as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == "db"))
        .and_then(|v| v["ip"].as_str())
        .and_then(|ip| ip.split('/').next())
        .context("db has no address")?
        .to_owned();
    host.sh(
        "web",
        &format!("echo \"web fetched: $(wget -q -O - http://{db_ip}/data)\""),
    )?;
    host.sh("web", "ip -4 addr show eth0 | grep inet; nc -w 2 169.254.169.254 80 </dev/null; echo \"metadata address: exit $?\"")?;
    println!(
        "\n-- a policy dropped into the policies directory applies to the running web at once --"
    );
    let policy = format!(
        "# web may not reach db's web server\nselector:\n  names: [web]\nmode: enforce\nnetwork:\n  deny_egress:\n    - cidr: {db_ip}/32\n      port: 80\n"
    );
    println!("$ cat > policies.d/lockdown.yaml\n{policy}");
    fs::create_dir_all(host.policies())?;
    fs::write(host.policies().join("lockdown.yaml"), policy)?;
    std::thread::sleep(Duration::from_millis(300));
    host.show(&["policy", "list"])?;
    host.sh(
        "web",
        &format!("wget -q -O /dev/null http://{db_ip}/data; echo \"fetch from db: exit $?\""),
    )?;
    host.show(&["events", "web"])?;
    println!("\n-- a fork bomb in web stops at its pids limit of 30; db is unaffected --");
    host.sh(
        "web",
        "i=0; while [ $i -lt 100 ]; do sleep 60 >/dev/null 2>&1 & i=$((i+1)); done 2>/dev/null",
    )?;
    host.sh("db", "echo db still starts processes: $(echo ok)")?;
    host.show(&["list"])?;
    host.show(&["stat", "web"])?;
    host.show(&["restart", "web"])?;
    host.show(&["list"])?;
    Ok(())
}

pub fn run() -> anyhow::Result<ExitCode> {
    setup::ensure()?;
    let artifacts = vm::Artifacts::build()?;
    println!("==== vzhost doctor on this host ====");
    // doctor exits non-zero when a feature is missing; the demo goes on.
    let doctor = Command::new(&artifacts.vzhost)
        .args(["doctor", "-o", "json"])
        .output()?;
    let _ = Command::new(&artifacts.vzhost).arg("doctor").status();
    let lsm_here = serde_json::from_slice::<serde_json::Value>(&doctor.stdout)
        .ok()
        .and_then(|v| {
            v.as_array()?
                .iter()
                .find(|c| c["name"] == "bpf-lsm-load")
                .map(|c| c["ok"] == true)
        })
        .unwrap_or(false);

    partitions(&artifacts.vzhost, !lsm_here)?;

    let demo = "/vm/tests/integration --test-threads=1 --nocapture lsm::escape::escape_attempts";
    if lsm_here {
        println!("\n==== KSAL escape attempts from a VPS (this host runs BPF LSM programs) ====");
        let test = artifacts
            .tests
            .iter()
            .find(|(n, _)| n == "integration")
            .context("integration test binary")?;
        let status = Command::new(&test.1)
            .args([
                "--test-threads=1",
                "--nocapture",
                "lsm::escape::escape_attempts",
            ])
            .status()?;
        return Ok(if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    println!(
        "\n==== KSAL escape attempts from a VPS, in the VM: this host refuses BPF LSM programs ===="
    );
    let args = vm::RunArgs {
        kernel: "6.12".into(),
        include: Vec::new(),
        timeout: 600,
        verbose: false,
        cmd: vec![
            "sh".into(),
            "-c".into(),
            format!("echo '$ vzhost doctor'; vzhost doctor; echo; {demo}"),
        ],
    };
    let outcome = vm::boot(&args, &artifacts, &mut |l| println!("[vm] {l}"))?;
    Ok(ExitCode::from(outcome.exit_code.clamp(0, 255) as u8))
}
