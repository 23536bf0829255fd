//! Section 1: start latency, vzhost against LXC and the bare floor.
use std::{fmt::Write as _, fs, path::Path, process::Command, time::Instant};

use super::{
    Plan,
    lxc::{lxc, lxc_config, template_dir},
    measure::{Report, Samples, target, timed},
};
use crate::host::Host;

pub(super) fn start_latency(vzhost: &Path, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
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
