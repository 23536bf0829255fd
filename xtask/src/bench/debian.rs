//! Section 6: Debian VPSs booting systemd and sshd, all on one template:
//! time from `start` to sshd's banner, memory of the first and of each
//! further VPS, and how many idle ones this machine holds.
use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    Plan,
    measure::{Report, Samples, mem_available_kib, rss_kib, settle, timed},
};
use crate::host::Host;

/// The address of Debian VPS number `i` on the daemon's bridge.
fn address(i: usize) -> String {
    format!("10.213.{}.{}", 1 + i / 250, 2 + i % 250)
}

/// The memory a VPS's cgroup holds now, from `vzhost stat`, in KiB.
fn charged_kib(host: &Host, name: &str) -> anyhow::Result<u64> {
    let stat: serde_json::Value =
        serde_json::from_str(&host.quiet(&["stat", name, "-o", "json"])?)?;
    let rows = stat.as_array().and_then(|a| a.first()).unwrap_or(&stat);
    rows["beancounters"]
        .as_array()
        .and_then(|b| b.iter().find(|r| r["resource"] == "memory"))
        .and_then(|r| r["held"].as_u64())
        .map(|bytes| bytes / 1024)
        .context("no memory beancounter in `vzhost stat`")
}

pub(super) fn debian(
    vzhost: &Path,
    template: &Path,
    plan: &Plan,
    report: &mut Report,
) -> anyhow::Result<()> {
    let host = Host::start(vzhost, "bench-debian", true)?;
    let daemon = host.daemon_pid().context("daemon pid")?;
    let import = timed(&mut host.cmd(&[
        "template",
        "import",
        "debian",
        template.to_str().context("UTF-8 path")?,
    ]))?;
    let daemon_before = rss_kib(daemon);
    let (mut banner, mut charged) = (Samples::default(), Vec::new());
    let mut held = 0;
    let mut failure = None;
    settle();
    let before = mem_available_kib();
    let mut available = Vec::new();
    for i in 0..plan.debian {
        let name = format!("deb{i}");
        let ip = address(i);
        let made = timed(&mut host.cmd(&["create", &name, "--template", "debian", "--ip", &ip]))
            .and_then(|_| {
                let t = Instant::now();
                timed(&mut host.cmd(&["start", &name]))?;
                host.await_sshd(&ip, Duration::from_secs(60))?;
                Ok(t.elapsed())
            });
        match made {
            Ok(took) => {
                if i < plan.exec_samples.max(3) {
                    banner.push(took);
                }
                held += 1;
            }
            Err(e) => {
                failure = Some(format!("VPS {} did not come up: {e:#}", i + 1));
                break;
            }
        }
        // The first two VPSs settle on their own: the first pays for the
        // template's pages in the page cache, the second shows the rest.
        if i < 2 {
            std::thread::sleep(Duration::from_secs(2));
            settle();
            charged.push(charged_kib(&host, &name)?);
            available.push(mem_available_kib());
        }
        if (i + 1) % 50 == 0 {
            eprintln!("bench: {} Debian VPSs running", i + 1);
        }
    }
    settle();
    let after = mem_available_kib();
    let first_host = available.first().map_or(0, |a| before.saturating_sub(*a));
    let further_host = match (available.first(), held) {
        (Some(first), n) if n > 1 => first.saturating_sub(after) / (n as u64 - 1),
        _ => 0,
    };
    let daemon_after = rss_kib(daemon);

    let mut s = String::from("## 6. Debian VPSs: systemd, sshd, one template\n\n");
    let _ = writeln!(
        s,
        "The cached Debian {} template (debootstrap minbase + systemd, openssh-server; \
         prepared by `vzhost template build debian`), imported once ({:.0} ms), then VPSs \
         made from it and started one after another, each with its own address, until \
         {} run or one fails. sshd's banner is read from the host side of the bridge.\n",
        std::fs::read_to_string(template.join("etc/debian_version"))
            .unwrap_or_default()
            .trim(),
        import.as_secs_f64() * 1e3,
        plan.debian
    );
    s += "| what | median ms | min ms | max ms | n |\n|---|---|---|---|---|\n";
    s += &banner.row("`start` until sshd's banner (first VPSs)");
    s += "\n| memory | KiB |\n|---|---|\n";
    let row = |s: &mut String, what: &str, kib: u64| {
        let _ = writeln!(s, "| {what} | {kib} |");
    };
    if let Some(first) = charged.first() {
        row(
            &mut s,
            "first VPS: charged to its cgroup (cold template)",
            *first,
        );
    }
    if let Some(second) = charged.get(1) {
        row(
            &mut s,
            "second VPS: charged to its cgroup (warm template)",
            *second,
        );
    }
    row(
        &mut s,
        "first VPS: host memory (MemAvailable drop; template pages are reclaimable cache)",
        first_host,
    );
    row(
        &mut s,
        "each further VPS: host memory (MemAvailable drop / N-1)",
        further_host,
    );
    row(&mut s, "daemon RSS before the first VPS", daemon_before);
    row(&mut s, "daemon RSS with all of them", daemon_after);
    let _ = writeln!(
        s,
        "\nIdle Debian VPSs with sshd held: {held} of {} tried{}.\n",
        plan.debian,
        failure.map_or(String::new(), |f| format!(" ({f})"))
    );
    report.add(s);
    Ok(())
}
