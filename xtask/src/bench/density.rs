//! Sections 2 and 4: N idle VPSs against N LXC containers, and what
//! scraping and listing them costs.
use std::{fmt::Write as _, fs, path::Path, time::Instant};

use anyhow::Context as _;

use super::{
    Plan,
    lxc::{lxc, lxc_config, template_dir},
    measure::{Report, Samples, mem_available_kib, rss_kib, scrape, settle, target, timed},
    teardown,
};
use crate::host::Host;

/// Create and start VPSs `d0`..`d{n-1}` (idle, busybox init) one after
/// another, each created with `create_args`; `each` hears each one's
/// create + start time in seconds.
pub(super) fn start_idle(
    host: &Host,
    n: usize,
    create_args: &[&str],
    mut each: impl FnMut(f64),
) -> anyhow::Result<()> {
    for i in 0..n {
        let name = format!("d{i}");
        let t = Instant::now();
        timed(host.cmd(&["create", &name]).args(create_args))?;
        timed(&mut host.cmd(&["start", &name]))?;
        each(t.elapsed().as_secs_f64());
        if (i + 1) % 100 == 0 {
            eprintln!("bench: {} VPSs running", i + 1);
        }
    }
    Ok(())
}

pub(super) fn density(vzhost: &Path, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let mut s = String::from("## 2. Density (natively, cgroup hooks only)\n\n");
    s += "N idle VPSs (busybox init, networking on) started one after another; then \
          LXC the same way (`lxc-start -d` of N containers with busybox init, no \
          network), in the same invocation. Memory is MemAvailable before and after, \
          divided by N (it includes kernel objects: namespaces, cgroups, veths).\n\n";
    s += "| N | vzhost ms/VPS first 100 | last 100 | ratio | vzhost KiB/VPS | daemon RSS MiB | exec true at N ms (median) | LXC ms/container first 100 | last 100 | LXC KiB/container | lxc-attach true at N ms |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
    let mut costs = Vec::new();
    let mut scrape_list = String::new();
    let mut last_costs = (0, f64::NAN, f64::NAN);
    let mut teardown_rows = String::new();
    for &n in &plan.density {
        let host = Host::start(vzhost, "bench", true)?;
        let mut per = Vec::new();
        settle();
        let cgroups_before = teardown::live_cgroups();
        let before = mem_available_kib();
        start_idle(&host, n, &["--stop-timeout", "0"], |took| per.push(took))?;
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
        let left = teardown::tear_down(&host, n, cgroups_before)?;
        let _ = writeln!(
            teardown_rows,
            "| {n} | {:.1} | {} → {} | {} | {} | {} |",
            left.stop_all.as_secs_f64(),
            left.cgroups.0,
            left.cgroups.1,
            left.links,
            left.routes,
            if left.none() {
                "**nothing left**"
            } else {
                "**left behind**"
            }
        );
        drop(host);
        // LXC, the same N.
        let lxc_dir = std::env::temp_dir().join(format!("vzhost-bench-lxc-{}", std::process::id()));
        fs::create_dir_all(&lxc_dir)?;
        let lxc_host = Host::start(vzhost, "bench-lxc", true)?;
        lxc_host.quiet(&["create", "tpl"])?;
        let rootfs = template_dir(&lxc_host)?;
        let conf = lxc_config(&lxc_dir, &rootfs, 3_000_000, true, None)?;
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
            "Host memory per idle VPS at N = {}: {} KiB; target at most 512 KiB: {}\n",
            big.0,
            big.3,
            target(big.3 <= 512, format!("{} KiB", big.3))
        );
    }
    s += "Then `vzhost stop --all` and a destroy of every VPS; what the host holds \
          afterwards (live cgroups on the host with the daemon up and no VPS → after; \
          VPS interfaces and host routes in the daemon's network namespace):\n\n\
          | N | stop --all s | live cgroups | veths | routes | |\n|---|---|---|---|---|---|\n";
    s += &teardown_rows;
    s.push('\n');
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
