//! The end of a density run: stop every VPS at once, destroy them all, and
//! show the host has nothing of them left (live cgroups, veths, host
//! routes). Map entries are checked by the integration test
//! `cleanup::vpss_stopped_and_destroyed_leave_nothing_behind`.
use std::{fs, process::Command, time::Duration};

use anyhow::Context as _;

use super::measure::timed;
use crate::host::{Host, in_netns_of};

/// Live cgroups on the host: the unified tree's descendants and each v1
/// hierarchy's count.
pub(super) fn live_cgroups() -> u64 {
    let v2 = [
        "/sys/fs/cgroup/unified/cgroup.stat",
        "/sys/fs/cgroup/cgroup.stat",
    ]
    .iter()
    .find_map(|p| fs::read_to_string(p).ok())
    .and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("nr_descendants ")?.trim().parse().ok())
    })
    .unwrap_or(0);
    let v1: u64 = fs::read_to_string("/proc/cgroups")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        // subsys_name hierarchy num_cgroups enabled; hierarchy 0 is v2's.
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) != Some(&"0")).then(|| f.get(2)?.parse::<u64>().ok())?
        })
        .sum();
    v2 + v1
}

/// Interfaces and routes of VPSs in the daemon's network namespace.
fn vps_links_and_routes(daemon: u32) -> anyhow::Result<(usize, usize)> {
    in_netns_of(daemon, || {
        let count = |args: &[&str]| -> anyhow::Result<usize> {
            let out = Command::new("ip").args(args).output()?;
            Ok(String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("vzh"))
                .count())
        };
        Ok((count(&["-o", "link"])?, count(&["route"])?))
    })
}

/// What the host held before the run and holds after it.
pub(super) struct Leftovers {
    pub stop_all: Duration,
    pub cgroups: (u64, u64),
    pub links: usize,
    pub routes: usize,
}

impl Leftovers {
    pub(super) fn none(&self) -> bool {
        self.cgroups.1 <= self.cgroups.0 && self.links == 0 && self.routes == 0
    }
}

/// `stop --all` (timed), then destroy VPSs `d0`..`d{n-1}` eight at a time;
/// `cgroups_before` is [`live_cgroups`] before the first was created.
pub(super) fn tear_down(host: &Host, n: usize, cgroups_before: u64) -> anyhow::Result<Leftovers> {
    let stop_all = timed(&mut host.cmd(&["stop", "--all"])).context("stop --all")?;
    let names: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = names
            .chunks(n.div_ceil(8).max(1))
            .map(|chunk| {
                scope.spawn(move || -> anyhow::Result<()> {
                    for name in chunk {
                        timed(&mut host.cmd(&["destroy", name]))
                            .with_context(|| format!("destroy {name}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("a destroying thread"))
    })?;
    let daemon = host.daemon_pid().context("daemon pid")?;
    let (links, routes) = vps_links_and_routes(daemon)?;
    Ok(Leftovers {
        stop_all,
        cgroups: (cgroups_before, live_cgroups()),
        links,
        routes,
    })
}
