//! Section 1: start latency, vzhost against LXC like for like (busybox
//! init, a veth on a bridge, an address and a route, in a user namespace)
//! and the bare floor, with where a vzhost start spends its time.
use std::{
    fmt::Write as _,
    fs,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::Path,
    process::Command,
    time::Instant,
};

use super::{
    Plan,
    lxc::{Veth, lxc, lxc_config, template_dir},
    measure::{Report, Samples, target, timed},
};
use crate::host::Host;

/// LXC's bridge, in the bench daemon's network namespace (never the host's).
const LXC_BRIDGE: &str = "lxcbench0";
/// What the daemon logs for the breakdown: its start phases, its launcher's.
const PHASE_LOG: &str = "info,vzhost::vps::start=debug,vzhost::ns::helper=debug";

/// One vzhost build under test: its daemon and what it measured.
struct Vz {
    label: &'static str,
    host: Host,
    /// `start` + `exec true` of a created VPS, and of that the start alone.
    start_exec: Samples,
    start: Samples,
    /// `exec true` on the running VPS.
    exec: Samples,
}

impl Vz {
    fn new(label: &'static str, vzhost: &Path) -> anyhow::Result<Self> {
        let host = Host::start_logging(vzhost, &format!("bench-{label}"), true, Some(PHASE_LOG))?;
        host.quiet(&["create", "lat", "--stop-timeout", "0"])?;
        Ok(Self {
            label,
            host,
            start_exec: Samples::default(),
            start: Samples::default(),
            exec: Samples::default(),
        })
    }

    fn round(&mut self) -> anyhow::Result<()> {
        let t = Instant::now();
        timed(&mut self.host.cmd(&["start", "lat"]))?;
        self.start.push(t.elapsed());
        timed(&mut self.host.cmd(&["exec", "lat", "--", "true"]))?;
        self.start_exec.push(t.elapsed());
        self.exec
            .push(timed(&mut self.host.cmd(&["exec", "lat", "--", "true"]))?);
        timed(&mut self.host.cmd(&["stop", "lat"]))?;
        Ok(())
    }
}

pub(super) fn start_latency(
    vzhost: &Path,
    baseline: Option<&Path>,
    plan: &Plan,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut vz = Vz::new("vzhost", vzhost)?;
    let mut before = baseline.map(|b| Vz::new("baseline", b)).transpose()?;
    let host = &vz.host;
    let rootfs = template_dir(host)?;
    let lxc_dir = host.state.join("lxc");
    fs::create_dir_all(&lxc_dir)?;
    let daemon = host.daemon_pid().expect("the daemon runs");
    let ns = LxcNamespaces::new(daemon, &lxc_dir)?;
    let veth = Veth {
        bridge: LXC_BRIDGE,
        address: "10.214.0.2/24",
        gateway: "10.214.0.1",
    };
    let init_conf = lxc_config(&lxc_dir, &rootfs, 3_000_000, true, Some(&veth))?;
    let exec_conf = lxc_config(&lxc_dir, &rootfs, 3_000_000, false, None)?;
    let in_ns = |args: &[&str]| ns.command(lxc(&lxc_dir, args));
    let (mut lx, mut lx_attach, mut lx_exec, mut floor) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let mut cycle: [Samples; 5] = Default::default();
    for i in 0..plan.reps {
        if let Some(b) = before.as_mut() {
            b.round()?;
        }
        vz.round()?;
        // LXC like for like: lxc-start -d of busybox init with a veth on
        // a bridge, then lxc-attach -- true.
        let name = format!("s{i}");
        let t = Instant::now();
        timed(in_ns(&["lxc-start", "-d", "-n", &name, "-f"]).arg(&init_conf))?;
        timed(&mut in_ns(&["lxc-attach", "-n", &name, "--", "/bin/true"]))?;
        lx.push(t.elapsed());
        lx_attach.push(timed(&mut in_ns(&[
            "lxc-attach",
            "-n",
            &name,
            "--",
            "/bin/true",
        ]))?);
        timed(&mut in_ns(&["lxc-stop", "-k", "-n", &name]))?;
        // LXC's lxc-execute of /bin/true on the same rootfs, no network.
        lx_exec.push(timed(
            lxc(&lxc_dir, &["lxc-execute", "-n", &format!("x{i}"), "-f"])
                .arg(&exec_conf)
                .args(["--", "/bin/true"]),
        )?);
        floor.push(timed(&mut unshare_floor(&rootfs))?);
        // The whole life of a VPS, phase by phase.
        let name = format!("c{i}");
        for (phase, args) in [
            (0, vec!["create", &name, "--stop-timeout", "0"]),
            (1, vec!["start", &name]),
            (2, vec!["exec", &name, "--", "true"]),
            (3, vec!["stop", &name]),
            (4, vec!["destroy", &name]),
        ] {
            cycle[phase].push(timed(&mut vz.host.cmd(&args))?);
        }
    }
    let total: Samples = Samples(
        (0..plan.reps)
            .map(|i| cycle.iter().map(|s| s.0[i]).sum())
            .collect(),
    );
    let mut s = String::from("## 1. Start latency\n\n");
    s += "Each repetition runs all of these, one after another (interleaved). LXC's \
          like-for-like peer: `lxc-start -d` of busybox init with `lxc.net.0.type = veth` \
          on a bridge of the bench's own (in the bench daemon's network namespace), an \
          address and a default route, in a user namespace, then `lxc-attach -- true`.\n\n";
    s += "| what | median ms | min ms | max ms | n |\n|---|---|---|---|---|\n";
    for v in before.iter().chain([&vz]) {
        s += &v.start_exec.row(&format!(
            "{}: start + exec true (created VPS, busybox init, veth on a bridge)",
            v.label
        ));
        s += &v.start.row("&nbsp;&nbsp;of which `vzhost start`");
    }
    s += &lx.row("LXC lxc-start -d (busybox init, veth on a bridge, userns) + lxc-attach true");
    s += &lx_exec.row("LXC lxc-execute /bin/true (same rootfs, userns, empty netns)");
    s += &floor.row("unshare (same namespaces) + chroot /bin/true: the floor");
    for v in before.iter().chain([&vz]) {
        s += &v
            .exec
            .row(&format!("{}: exec true on the running VPS", v.label));
    }
    s += &lx_attach.row("LXC lxc-attach true on the running container");
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
    s.push('\n');
    for v in before.iter().chain([&vz]) {
        let lxc_ratio = v.start_exec.median() / lx.median();
        let floor_ratio = v.start_exec.median() / floor.median();
        let _ = writeln!(
            s,
            "- {}: start → exec true / LXC like for like (medians): target at most 0.8: {}; \
             / the unshare floor: target at most 3: {}; exec / lxc-attach on a running one: {:.2}",
            v.label,
            target(lxc_ratio <= 0.8, format!("{lxc_ratio:.2}")),
            target(floor_ratio <= 3.0, format!("{floor_ratio:.2}")),
            v.exec.median() / lx_attach.median()
        );
    }
    s += "\n### Where a start spends its time\n\n\
          Phases the daemon logs at debug level for each `start` of the measured VPS \
          (medians over the repetitions; the launcher's phases are inside its `launch`).\n\n";
    for v in before.iter().chain([&vz]) {
        s += &breakdown(v)?;
    }
    report.add(s);
    Ok(())
}

/// Where the LXC peer runs: the bench daemon's network namespace (its
/// veths go on the bench's bridge there, and its tools find each other's
/// abstract sockets), and a mount namespace whose /sys/class/net shows
/// that namespace's links (LXC looks for the bridge there). A sleeping
/// holder keeps both.
struct LxcNamespaces {
    holder: std::process::Child,
    net: fs::File,
    mnt: fs::File,
}

impl LxcNamespaces {
    fn new(daemon: u32, dir: &Path) -> anyhow::Result<Self> {
        let sys = dir.join("sys");
        fs::create_dir_all(&sys)?;
        let script = format!(
            "set -e; ip link add {LXC_BRIDGE} type bridge; \
             ip addr add 10.214.0.1/24 dev {LXC_BRIDGE}; ip link set {LXC_BRIDGE} up; \
             mount -t sysfs sysfs {s}; mount --bind {s}/class/net /sys/class/net; \
             mount --bind {s}/devices/virtual/net /sys/devices/virtual/net; \
             echo ready; exec sleep infinity",
            s = sys.display()
        );
        let mut holder = Command::new("nsenter")
            .args([
                "-t",
                &daemon.to_string(),
                "-n",
                "unshare",
                "--mount",
                "sh",
                "-c",
            ])
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut ready = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(holder.stdout.take().expect("piped"), 6),
            &mut ready,
        )?;
        if ready != "ready\n" {
            let _ = holder.kill();
            let _ = holder.wait();
            anyhow::bail!("cannot set up LXC's bridge and /sys/class/net");
        }
        let pid = holder.id();
        let open = |ns: &str| fs::File::open(format!("/proc/{pid}/ns/{ns}"));
        Ok(Self {
            net: open("net")?,
            mnt: open("mnt")?,
            holder,
        })
    }

    /// `cmd`, run in these namespaces.
    fn command(&self, mut cmd: Command) -> Command {
        let (net, mnt) = (self.net.as_raw_fd(), self.mnt.as_raw_fd());
        // SAFETY: setns(2) between fork and exec, on fds `self` keeps open.
        unsafe {
            cmd.pre_exec(move || {
                for (fd, kind) in [(net, libc::CLONE_NEWNET), (mnt, libc::CLONE_NEWNS)] {
                    if libc::setns(fd, kind) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd
    }
}

impl Drop for LxcNamespaces {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The same namespaces by unshare, chroot, /bin/true.
fn unshare_floor(rootfs: &Path) -> Command {
    let mut c = Command::new("unshare");
    c.args([
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
    .arg(rootfs)
    .arg("/bin/true");
    c
}

/// The phase table of `v`'s starts of VPS `lat`, from its daemon's log.
fn breakdown(v: &Vz) -> anyhow::Result<String> {
    let log = fs::read_to_string(v.host.state.join("daemon.log"))?;
    let mut s = format!(
        "{}:\n\n| phase | median ms | min ms | max ms | n |\n|---|---|---|---|---|\n",
        v.label
    );
    let start = phases(&log, "start phases: ");
    let launcher = phases(&log, "launcher phases: ");
    if start.is_empty() {
        s += "| (this build logs no phases) | | | | |\n\n";
        return Ok(s);
    }
    let sum = Samples(
        (0..start[0].1.0.len())
            .map(|i| start.iter().filter_map(|(_, p)| p.0.get(i)).sum())
            .collect(),
    );
    for (phase, samples) in &start {
        s += &samples.row(phase);
        if phase == "launch" {
            for (sub, samples) in &launcher {
                s += &samples.row(&format!("&nbsp;&nbsp;launcher: {sub}"));
            }
        }
    }
    s += &sum.row("all phases (the daemon's part of `vzhost start`)");
    s.push('\n');
    Ok(s)
}

/// Each phase's samples, in their order, from the log lines of VPS `lat`
/// that carry `marker` followed by `name=1.234ms ...`.
fn phases(log: &str, marker: &str) -> Vec<(String, Samples)> {
    let mut out: Vec<(String, Samples)> = Vec::new();
    for line in log.lines().map(strip_ansi) {
        if !line.contains("vps=lat}") {
            continue;
        }
        let Some((_, rest)) = line.split_once(marker) else {
            continue;
        };
        for kv in rest.split_whitespace() {
            let Some((k, ms)) = kv
                .split_once('=')
                .and_then(|(k, v)| Some((k, v.strip_suffix("ms")?.parse::<f64>().ok()?)))
            else {
                continue;
            };
            let at = match out.iter().position(|(p, _)| p == k) {
                Some(at) => at,
                None => {
                    out.push((k.to_owned(), Samples::default()));
                    out.len() - 1
                }
            };
            out[at].1.0.push(ms / 1e3);
        }
    }
    out
}

/// `line` without terminal colour sequences (ESC [ ... m).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
