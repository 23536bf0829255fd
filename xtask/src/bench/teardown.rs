//! The end of a density run: stop every VPS at once, destroy them all, and
//! show the host has nothing of them left (live cgroups, veths, host
//! routes). Map entries are checked by the integration test
//! `cleanup::vpss_stopped_and_destroyed_leave_nothing_behind`.
use std::{fs, process::Command, time::Duration};

use anyhow::Context as _;

use super::measure::timed;
use crate::host::{Host, in_netns_of};

/// Live cgroups on the host: the directories of every cgroup hierarchy
/// (a cgroup removed but still dying, pinned by its charged pages, has
/// none, and the kernel's own counts include those).
pub(super) fn live_cgroups() -> u64 {
    fn dirs(dir: &std::path::Path) -> u64 {
        fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| 1 + dirs(&e.path()))
                .sum()
        })
    }
    dirs(std::path::Path::new("/sys/fs/cgroup"))
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
/// (Other work on the host that makes cgroups meanwhile shows as left.)
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
