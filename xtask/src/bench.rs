//! `cargo xtask bench [--quick]`: vzhost measured side by side with its
//! peers in one invocation (LXC from Debian's packages, and bare `unshare`
//! as the floor), interleaved where the benchmark allows, so ratios hold
//! on a noisy machine. Writes `bench/REPORT.md` (`--quick`: a smoke run for
//! CI, written under target/ instead).
use std::{
    fmt::Write as _,
    fs,
    io::{Read as _, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{host::Host, setup, shell, vm};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A short smoke run (CI): few repetitions, small N.
    #[arg(long)]
    pub quick: bool,
}

struct Plan {
    reps: usize,
    density: Vec<usize>,
    exec_samples: usize,
    reload_reps: usize,
    vm_ops: u64,
    vm_density: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                reps: 3,
                density: vec![10],
                exec_samples: 3,
                reload_reps: 3,
                vm_ops: 2_000,
                vm_density: 5,
            }
        } else {
            Self {
                reps: 15,
                density: vec![100, 500, 1000],
                exec_samples: 20,
                reload_reps: 10,
                vm_ops: 100_000,
                vm_density: 100,
            }
        }
    }
}

/// Samples of one measurement, in seconds.
#[derive(Default, Clone)]
struct Samples(Vec<f64>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64());
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    fn median(&self) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let m = v.len() / 2;
        if v.len().is_multiple_of(2) {
            (v[m - 1] + v[m]) / 2.0
        } else {
            v[m]
        }
    }
    fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
    fn row(&self, what: &str) -> String {
        format!(
            "| {what} | {:.1} | {:.1} | {:.1} | {} |\n",
            self.median() * 1e3,
            self.min() * 1e3,
            self.max() * 1e3,
            self.0.len()
        )
    }
}

fn timed(cmd: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

fn target(ok: bool, text: String) -> String {
    format!("{} ({text})", if ok { "**met**" } else { "**missed**" })
}

/// What the report says, section by section.
#[derive(Default)]
struct Report {
    sections: Vec<String>,
}

impl Report {
    fn add(&mut self, s: String) {
        println!("{s}");
        self.sections.push(s);
    }
}

/// An LXC container configuration over the busybox template: the same
/// namespaces as a VPS (user, mount, PID, UTS, IPC, net, cgroup), an empty
/// network namespace, proc and a read-only sys.
fn lxc_config(dir: &Path, rootfs: &Path, uid_base: u32, init: bool) -> anyhow::Result<PathBuf> {
    let path = dir.join(if init { "init.conf" } else { "exec.conf" });
    let mut text = format!(
        "lxc.uts.name = bench\nlxc.rootfs.path = dir:{}\nlxc.net.0.type = empty\n\
         lxc.idmap = u 0 {uid_base} 65536\nlxc.idmap = g 0 {uid_base} 65536\n\
         lxc.mount.auto = proc:mixed sys:ro cgroup:mixed\nlxc.autodev = 1\n\
         lxc.apparmor.profile = unconfined\nlxc.console.path = none\n",
        rootfs.display()
    );
    if init {
        text += "lxc.init.cmd = /sbin/init\n";
    }
    fs::write(&path, text)?;
    Ok(path)
}

/// An LXC tool with its containers kept under `dir`.
fn lxc(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(args[0]);
    c.arg("-P").arg(dir).args(&args[1..]);
    c
}

/// The busybox template's directory, as the daemon made it.
/// A copy of vzhost's busybox template for LXC: vzhost keeps its own
/// state private (0700), so the peer gets the same files where it can
/// reach them.
fn template_dir(host: &Host) -> anyhow::Result<PathBuf> {
    let v: serde_json::Value =
        serde_json::from_str(&host.quiet(&["template", "list", "-o", "json"])?)?;
    let template = v
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "busybox"))
        .and_then(|t| t["path"].as_str())
        .map(PathBuf::from)
        .context("no busybox template")?;
    let copy = host.state.join("lxc-rootfs");
    if !copy.exists() {
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&copy)
            .status()?;
        anyhow::ensure!(copied.success(), "cp -a of the busybox template failed");
    }
    Ok(copy)
}

fn start_latency(vzhost: &Path, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let host = Host::start(vzhost, "bench", true)?;
    host.quiet(&["create", "lat", "--stop-timeout", "0"])?;
    let rootfs = template_dir(&host)?;
    let lxc_dir = host.state.join("lxc");
    fs::create_dir_all(&lxc_dir)?;
    let exec_conf = lxc_config(&lxc_dir, &rootfs, 3_000_000, false)?;
    let (mut vz, mut lx, mut floor) = (Samples::default(), Samples::default(), Samples::default());
    let mut cycle: [Samples; 5] = Default::default();
    for i in 0..plan.reps {
        // vzhost: start of a created VPS until `exec true` returns.
        let t = Instant::now();
        timed(&mut host.cmd(&["start", "lat"]))?;
        timed(&mut host.cmd(&["exec", "lat", "--", "true"]))?;
        vz.push(t.elapsed());
        timed(&mut host.cmd(&["stop", "lat"]))?;
        // LXC: lxc-execute of /bin/true on the same rootfs.
        lx.push(timed(
            lxc(&lxc_dir, &["lxc-execute", "-n", &format!("x{i}"), "-f"])
                .arg(&exec_conf)
                .args(["--", "/bin/true"]),
        )?);
        // The floor: the same namespaces by unshare, chroot, /bin/true.
        floor.push(timed(
            Command::new("unshare")
                .args([
                    "--user",
                    "--map-root-user",
                    "--mount",
                    "--uts",
                    "--ipc",
                    "--net",
                    "--pid",
                    "--cgroup",
                    "--fork",
                    "chroot",
                ])
                .arg(&rootfs)
                .arg("/bin/true"),
        )?);
        // The whole life of a VPS, phase by phase.
        let name = format!("c{i}");
        for (phase, args) in [
            (0, vec!["create", &name, "--stop-timeout", "0"]),
            (1, vec!["start", &name]),
            (2, vec!["exec", &name, "--", "true"]),
            (3, vec!["stop", &name]),
            (4, vec!["destroy", &name]),
        ] {
            cycle[phase].push(timed(&mut host.cmd(&args))?);
        }
    }
    let total: Samples = Samples(
        (0..plan.reps)
            .map(|i| cycle.iter().map(|s| s.0[i]).sum())
            .collect(),
    );
    let ratio = vz.median() / lx.median();
    let mut s = String::from("## 1. Start latency\n\n");
    s += "Each repetition runs all three, one after another (interleaved).\n\n";
    s += "| what | median ms | min ms | max ms | n |\n|---|---|---|---|---|\n";
    s += &vz.row("vzhost start + exec true (created VPS, busybox init, network on)");
    s += &lx.row("LXC lxc-execute /bin/true (same rootfs, userns, empty netns)");
    s += &floor.row("unshare (same namespaces) + chroot /bin/true: the floor");
    s += &total.row("vzhost create+start+exec+stop+destroy");
    for (i, phase) in [
        "create",
        "start",
        "exec true",
        "stop (SIGKILL at once: --stop-timeout 0)",
        "destroy",
    ]
    .iter()
    .enumerate()
    {
        s += &cycle[i].row(&format!("&nbsp;&nbsp;of which {phase}"));
    }
    let _ = writeln!(
        s,
        "\nvzhost / LXC (medians): {ratio:.2}; target at most 0.8: {}\n",
        target(ratio <= 0.8, format!("{ratio:.2}"))
    );
    report.add(s);
    Ok(())
}

/// The `lxc.pivot` cgroups LXC makes in every hierarchy to move itself.
fn lxc_pivots() -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("lxc.pivot"))
        .filter(|p| p.is_dir())
        .collect()
}

/// Remove the `lxc.pivot` cgroups this run's LXC made.
fn remove_lxc_pivots(before: &[PathBuf]) {
    for p in lxc_pivots() {
        if !before.contains(&p) {
            let _ = fs::remove_dir(&p);
        }
    }
}

/// A `Name:   123 kB` field of a /proc status-like file, in KiB.
fn kib_field(path: &str, field: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix(field)?
                    .trim()
                    .strip_suffix(" kB")?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

fn mem_available_kib() -> u64 {
    kib_field("/proc/meminfo", "MemAvailable:")
}

fn rss_kib(pid: u32) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Write back dirty pages and let the machine settle before a memory reading.
fn settle() {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(500));
}

/// `GET path` on 127.0.0.1:9464 inside the network namespace of `pid`.
fn scrape(pid: u32) -> anyhow::Result<(Duration, usize)> {
    let ns = fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::spawn(move || -> anyhow::Result<(Duration, usize)> {
        // SAFETY: setns on a thread this closure owns; it moves only it.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns");
        }
        let start = Instant::now();
        let mut s = std::net::TcpStream::connect("127.0.0.1:9464")?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut body = Vec::new();
        s.read_to_end(&mut body)?;
        Ok((start.elapsed(), body.len()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("scrape thread panicked"))?
}

fn density(vzhost: &Path, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let mut s = String::from("## 2. Density (natively, cgroup hooks only)\n\n");
    s += "N idle VPSs (busybox init, networking on) started one after another; then \
          LXC the same way (`lxc-start -d` of N containers with busybox init, no \
          network), in the same invocation. Memory is MemAvailable before and after, \
          divided by N (it includes kernel objects: namespaces, cgroups, veths).\n\n";
    s += "| N | vzhost ms/VPS first 100 | last 100 | ratio | vzhost KiB/VPS | daemon RSS MiB | exec true at N ms (median) | LXC ms/container first 100 | last 100 | LXC KiB/container | lxc-attach true at N ms |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
    let mut costs = Vec::new();
    let mut scrape_list = String::new();
    let mut last_costs = (0, f64::NAN, f64::NAN);
    for &n in &plan.density {
        let host = Host::start(vzhost, "bench", true)?;
        let mut per = Vec::new();
        settle();
        let before = mem_available_kib();
        for i in 0..n {
            let name = format!("d{i}");
            let t = Instant::now();
            timed(&mut host.cmd(&["create", &name, "--stop-timeout", "0"]))?;
            timed(&mut host.cmd(&["start", &name]))?;
            per.push(t.elapsed().as_secs_f64());
            if (i + 1) % 100 == 0 {
                eprintln!("bench: {} VPSs running", i + 1);
            }
        }
        settle();
        let vz_kib = before.saturating_sub(mem_available_kib()) / n as u64;
        let window = n.min(100);
        let first: f64 = per[..window].iter().sum::<f64>() / window as f64;
        let last: f64 = per[n - window..].iter().sum::<f64>() / window as f64;
        let mut exec = Samples::default();
        for i in 0..plan.exec_samples {
            let name = format!("d{}", i * n / plan.exec_samples);
            exec.push(timed(&mut host.cmd(&["exec", &name, "--", "true"]))?);
        }
        // Every one answers.
        for i in 0..n {
            timed(&mut host.cmd(&["exec", &format!("d{i}"), "--", "true"]))
                .with_context(|| format!("VPS d{i} does not answer at N = {n}"))?;
        }
        let daemon = host.daemon_pid().context("daemon pid")?;
        let rss = rss_kib(daemon) as f64 / 1024.0;
        let (mut scr, mut list) = (Samples::default(), Samples::default());
        let mut bytes = 0;
        for _ in 0..plan.exec_samples.max(3) {
            let (d, b) = scrape(daemon)?;
            scr.push(d);
            bytes = b;
            list.push(timed(&mut host.cmd(&["list", "-o", "json"]))?);
        }
        let _ = writeln!(
            scrape_list,
            "| {n} | {:.1} | {:.1} | {:.1} | {:.1} | {bytes} |",
            scr.median() * 1e3,
            scr.max() * 1e3,
            list.median() * 1e3,
            list.max() * 1e3
        );
        last_costs = (n, scr.median(), list.median());
        drop(host);
        // LXC, the same N.
        let lxc_dir = std::env::temp_dir().join(format!("vzhost-bench-lxc-{}", std::process::id()));
        fs::create_dir_all(&lxc_dir)?;
        let lxc_host = Host::start(vzhost, "bench-lxc", true)?;
        lxc_host.quiet(&["create", "tpl"])?;
        let rootfs = template_dir(&lxc_host)?;
        let conf = lxc_config(&lxc_dir, &rootfs, 3_000_000, true)?;
        let mut lper = Vec::new();
        settle();
        let lbefore = mem_available_kib();
        let result = (|| -> anyhow::Result<Samples> {
            for i in 0..n {
                let t = Instant::now();
                timed(
                    lxc(&lxc_dir, &["lxc-start", "-d", "-n", &format!("l{i}"), "-f"]).arg(&conf),
                )?;
                lper.push(t.elapsed().as_secs_f64());
            }
            let mut attach = Samples::default();
            for i in 0..plan.exec_samples {
                let name = format!("l{}", i * n / plan.exec_samples);
                attach.push(timed(
                    lxc(&lxc_dir, &["lxc-attach", "-n", &name]).args(["--", "/bin/true"]),
                )?);
            }
            Ok(attach)
        })();
        settle();
        let lxc_kib = lbefore.saturating_sub(mem_available_kib()) / n as u64;
        for i in 0..lper.len() {
            let _ = lxc(&lxc_dir, &["lxc-stop", "-k", "-n", &format!("l{i}")]).output();
        }
        drop(lxc_host);
        let _ = fs::remove_dir_all(&lxc_dir);
        let attach = result?;
        let lfirst: f64 = lper[..window].iter().sum::<f64>() / window as f64;
        let llast: f64 = lper[n - window..].iter().sum::<f64>() / window as f64;
        costs.push((n, first, last, vz_kib));
        let _ = writeln!(
            s,
            "| {n} | {:.1} | {:.1} | {:.2} | {vz_kib} | {rss:.1} | {:.1} | {:.1} | {:.1} | {lxc_kib} | {:.1} |",
            first * 1e3,
            last * 1e3,
            last / first,
            exec.median() * 1e3,
            lfirst * 1e3,
            llast * 1e3,
            attach.median() * 1e3
        );
    }
    if let (Some(small), Some(big)) = (costs.first(), costs.last()) {
        let growth = big.2 / small.1;
        let _ = writeln!(
            s,
            "\nPer-VPS start cost, last 100 at N = {} against the first 100 at N = {}: {growth:.2}; target at most 1.2: {}",
            big.0,
            small.0,
            target(growth <= 1.2, format!("{growth:.2}"))
        );
        let _ = writeln!(
            s,
            "Host memory per idle VPS at N = {}: {} KiB; target at most 1 MiB: {}\n",
            big.0,
            big.3,
            target(big.3 <= 1024, format!("{} KiB", big.3))
        );
    }
    report.add(s);
    let mut t = String::from("## 4. Scrape and list cost\n\n");
    t += "With N VPSs running: `GET /metrics` (fresh values from every VPS's cgroup \
          files and the KSAL maps) and `vzhost list -o json`.\n\n";
    t += "| N | /metrics median ms | max ms | list -o json median ms | max ms | /metrics bytes |\n|---|---|---|---|---|---|\n";
    t += &scrape_list;
    let (n, scr, list) = last_costs;
    let _ = writeln!(
        t,
        "\nAt N = {n}: /metrics {}; list {} (targets: under 100 ms each)\n",
        target(scr < 0.1, format!("{:.0} ms", scr * 1e3)),
        target(list < 0.1, format!("{:.0} ms", list * 1e3))
    );
    report.add(t);
    Ok(())
}

fn reload(vzhost: &Path, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let host = Host::start(vzhost, "bench", true)?;
    host.quiet(&["create", "a", "--ip", "10.213.0.10"])?;
    host.quiet(&["create", "b", "--ip", "10.213.0.11"])?;
    host.quiet(&["start", "a"])?;
    host.quiet(&["start", "b"])?;
    host.quiet(&["exec", "b", "--", "httpd", "-p", "0.0.0.0:8080", "-h", "/"])?;
    let a_pid = serde_json::from_str::<serde_json::Value>(&host.quiet(&["list", "-o", "json"])?)?
        .as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == "a"))
        .and_then(|v| v["init_pid"].as_u64())
        .context("a's init")?;
    let procs = host.vps_cgroup("a")?.join("cgroup.procs");
    let policy = host.policies().join("lockdown.yaml");
    let text = "selector:\n  names: [a]\nmode: enforce\nallow_degraded: true\nnetwork:\n  deny_egress:\n    - cidr: 10.213.0.11/32\n";
    // A prober in a's cgroup and network namespace: connect as fast as it
    // can and report the moment a denial first arrives (or ends).
    let mut on = Samples::default();
    let mut off = Samples::default();
    for _ in 0..plan.reload_reps {
        for (denied_wanted, samples) in [(true, &mut on), (false, &mut off)] {
            let mut probe = Command::new("nsenter")
                .args(["-t", &a_pid.to_string(), "-n", "sh", "-c"])
                .arg(format!(
                    "echo $$ > {}; while :; do if busybox nc -w 1 10.213.0.11 8080 </dev/null 2>&1 | grep -q 'not permitted'; then d=1; else d=0; fi; if [ $d = {} ]; then exit 0; fi; done",
                    procs.display(),
                    u8::from(denied_wanted)
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            std::thread::sleep(Duration::from_millis(200));
            let t = Instant::now();
            if denied_wanted {
                let tmp = policy.with_extension("tmp");
                fs::write(&tmp, text)?;
                fs::rename(&tmp, &policy)?;
            } else {
                fs::remove_file(&policy)?;
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if probe.try_wait()?.is_some() {
                    samples.push(t.elapsed());
                    break;
                }
                if Instant::now() > deadline {
                    let _ = probe.kill();
                    bail!("the policy change was never enforced");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let mut s = String::from("## 5. Policy reload\n\n");
    s += "From the rename of a policy file into the policies directory to the first \
          connect from inside the running VPS that meets the new rule (a prober loops \
          `nc` in the VPS's cgroup and network namespace, a few ms per try).\n\n";
    s += "| what | median ms | min ms | max ms | n |\n|---|---|---|---|---|\n";
    s += &on.row("new deny rule enforced");
    s += &off.row("removed rule lifted");
    let _ = writeln!(
        s,
        "\nTarget under 1 s (aim 100 ms): {}\n",
        target(on.median() < 1.0, format!("{:.0} ms", on.median() * 1e3))
    );
    report.add(s);
    Ok(())
}

fn in_vm(plan: &Plan, artifacts: &vm::Artifacts, report: &mut Report) -> anyhow::Result<()> {
    let args = vm::RunArgs::shell(
        "6.12",
        1800,
        format!(
            "VZHOST_BENCH_OPS={} VZHOST_BENCH_N={} /vm/tests/integration --ignored --test-threads=1 --nocapture bench::",
            plan.vm_ops, plan.vm_density
        ),
    );
    let mut lines = Vec::new();
    let outcome = vm::boot(&args, artifacts, &mut |l| {
        println!("[vm] {l}");
        lines.push(l.to_owned());
    })?;
    if outcome.exit_code != 0 {
        bail!("the VM benchmarks failed (exit {})", outcome.exit_code);
    }
    let mut s = String::from("## 3. KSAL overhead and density in the VM (6.12, TCG)\n\n");
    s += "Inside a VPS with every KSAL program attached and its policy's rules in the \
          maps, against the same loop in a cgroup with no KSAL loaded at all, \
          alternating in the same run. The VM is emulated (TCG): absolute times are \
          slow, the ratio is what counts.\n\n";
    s += "| measure | without KSAL | with KSAL | ratio |\n|---|---|---|---|\n";
    // The VM benchmarks print their rows between markers; libtest puts the
    // test's name on the line the output starts, the console a CR at the end.
    let mut inside = false;
    let mut text = String::new();
    for l in lines.iter().map(|l| l.trim_end()) {
        if l.ends_with("BENCH-MD-BEGIN") {
            inside = true;
        } else if l.starts_with("BENCH-MD-END") {
            inside = false;
        } else if inside && l.starts_with('|') {
            s += l;
            s.push('\n');
        } else if inside {
            text += l;
            text.push('\n');
        }
    }
    s.push('\n');
    s += &text;
    report.add(s);
    Ok(())
}

fn machine_facts() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(|m| m.trim().to_owned())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let lxc = Command::new("lxc-execute")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "- CPU: {cpu}, {cores} cores; {mem}\n- Kernel: {} (hybrid cgroups, BPF LSM refused: the native runs use the cgroup hooks only)\n- LXC {lxc} (Debian)\n",
        kernel.trim()
    )
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    setup::ensure()?;
    if !shell::is_root() {
        bail!("the benchmarks create cgroups and namespaces: run them as root");
    }
    let plan = Plan::new(args.quick);
    let artifacts = vm::Artifacts::build()?;
    let vzhost = if args.quick {
        artifacts.vzhost.clone()
    } else {
        shell::run(
            Command::new("cargo")
                .args([
                    "build",
                    "--release",
                    "--package",
                    "vzhost",
                    "--bin",
                    "vzhost",
                ])
                .current_dir(shell::workspace_root()),
        )?;
        shell::workspace_root().join("target/release/vzhost")
    };
    let started = Instant::now();
    let mut report = Report::default();
    let pivots = lxc_pivots();
    let measured = start_latency(&vzhost, &plan, &mut report)
        .and_then(|()| density(&vzhost, &plan, &mut report));
    // LXC leaves a pivot cgroup in every hierarchy it moved through.
    remove_lxc_pivots(&pivots);
    measured?;
    in_vm(&plan, &artifacts, &mut report)?;
    reload(&vzhost, &plan, &mut report)?;
    let date = shell::output(Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC"))?;
    let mut md = format!(
        "# vzhost benchmarks\n\nProduced by `cargo xtask bench{}` on {} in {:.0} s, vzhost {} build.\n\n{}\n",
        if args.quick { " --quick" } else { "" },
        date.trim(),
        started.elapsed().as_secs_f64(),
        if args.quick { "debug" } else { "release" },
        machine_facts()
    );
    // Sections in their numbered order, whatever order they ran in.
    report
        .sections
        .sort_by_key(|s| s.get(3..4).and_then(|n| n.parse::<u8>().ok()));
    for s in &report.sections {
        md += s;
        md.push('\n');
    }
    let path = if args.quick {
        shell::workspace_root().join("target/bench/REPORT-quick.md")
    } else {
        shell::workspace_root().join("bench/REPORT.md")
    };
    fs::create_dir_all(path.parent().expect("has a parent"))?;
    fs::write(&path, md)?;
    println!("report: {}", path.display());
    Ok(ExitCode::SUCCESS)
}
