//! Section 7: operations on many VPSs at once. Starts by many clients at
//! the same time against the same starts one after another, and
//! `vzhost stop --all` of N running idle VPSs (a host shutdown), each
//! given its clean shutdown (busybox init's own, about 2 s) first.
use std::{fmt::Write as _, path::Path, process::Child, time::Instant};

use anyhow::{Context as _, bail};

use super::{
    Plan,
    density::start_idle,
    measure::{Report, target, timed},
};
use crate::host::Host;

/// The target for `stop --all` of 1000 running VPSs.
const STOP_ALL_TARGET_S: f64 = 30.0;

pub(super) fn parallel(vzhost: &Path, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let mut s = String::from("## 7. Parallel operations (natively)\n\n");
    s += "| what | N | seconds | target |\n|---|---|---|---|\n";
    let n = plan.parallel_starts;
    let (together, one_by_one) = starts(vzhost, n)?;
    let _ = writeln!(
        s,
        "| `vzhost start` by N clients at once (created VPSs) | {n} | {together:.2} | {} |",
        target(
            together < one_by_one,
            format!("{together:.2} s < {one_by_one:.2} s")
        )
    );
    let _ = writeln!(
        s,
        "| the same N starts one after another | {n} | {one_by_one:.2} | |"
    );
    let n = plan.stop_all;
    let took = stop_all(vzhost, n)?;
    let _ = writeln!(
        s,
        "| `vzhost stop --all` of N running idle VPSs (clean shutdown each) | {n} | {took:.1} | {} |",
        if n >= 1000 {
            target(took < STOP_ALL_TARGET_S, format!("{took:.1} s"))
        } else {
            format!("under {STOP_ALL_TARGET_S:.0} s at N = 1000 (not measured at this N)")
        }
    );
    report.add(s);
    Ok(())
}

/// `n` created VPSs started by `n` clients at once, then (stopped again)
/// one after another: both wall times, in seconds.
fn starts(vzhost: &Path, n: usize) -> anyhow::Result<(f64, f64)> {
    let host = Host::start(vzhost, "bench-par", true)?;
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    for name in &names {
        timed(&mut host.cmd(&["create", name, "--stop-timeout", "0"]))?;
    }
    let t = Instant::now();
    let clients: Vec<Child> = names
        .iter()
        .map(|name| host.cmd(&["start", name]).spawn())
        .collect::<Result<_, _>>()?;
    for (name, mut c) in names.iter().zip(clients) {
        if !c.wait()?.success() {
            bail!("start of {name} by one of {n} clients at once failed");
        }
    }
    let together = t.elapsed().as_secs_f64();
    timed(&mut host.cmd(&["stop", "--all"]))?;
    let t = Instant::now();
    for name in &names {
        timed(&mut host.cmd(&["start", name]))?;
    }
    let one_by_one = t.elapsed().as_secs_f64();
    timed(&mut host.cmd(&["stop", "--all"]))?;
    Ok((together, one_by_one))
}

/// Seconds `vzhost stop --all` takes with `n` idle VPSs running, checked
/// to leave none running.
fn stop_all(vzhost: &Path, n: usize) -> anyhow::Result<f64> {
    let host = Host::start(vzhost, "bench-stopall", true)?;
    // The default stop timeout: each init gets its clean shutdown.
    start_idle(&host, n, &[], |_| {})?;
    let took = timed(&mut host.cmd(&["stop", "--all"]))?.as_secs_f64();
    let list: serde_json::Value = serde_json::from_str(&host.quiet(&["list", "-o", "json"])?)?;
    let running = list
        .as_array()
        .context("list is an array")?
        .iter()
        .filter(|v| v["status"] != "stopped")
        .count();
    if running > 0 {
        bail!("{running} of {n} VPSs still run after stop --all");
    }
    Ok(took)
}
