//! `vzhost list` and `vzhost stat`: what each VPS is and uses, read
//! without any VPS's lock, so a long stop never holds them up.
use std::sync::Arc;

use super::{
    error::Result,
    host::{Host, lock},
};
use crate::{
    cgroup::counters::OpenCgroup,
    metrics::VpsStat,
    model::{Name, Status, VpsStatus},
    rootfs::disk::VpsDisk,
};

impl Host {
    pub fn list(&self) -> Result<Vec<VpsStatus>> {
        let specs = self.store.list()?;
        Ok(in_parallel(specs, |spec| {
            let runtime = self.live_runtime(&spec.name);
            let running = runtime.is_some();
            let (network, degraded, policy) = {
                let enforcement = self.enforcement();
                (
                    running.then(|| enforcement.net_stats(spec.id)).flatten(),
                    running && enforcement.is_degraded(&spec),
                    enforcement.policy_of(&spec).ok().map(|p| p.name),
                )
            };
            VpsStatus {
                status: if running {
                    Status::Running
                } else {
                    Status::Stopped
                },
                init_pid: runtime.as_ref().map(|r| r.init_pid),
                network,
                degraded,
                policy,
                nproc: match &runtime {
                    Some(r) => {
                        let open = self.open_cgroup(&spec.name, r.started_at);
                        open.tasks()
                            .unwrap_or_else(|| self.cgroup(&spec.name).pids().len() as u64)
                    }
                    None => 0,
                },
                last_exit: self.last_exit(&spec.name),
                name: spec.name.to_string(),
                ip: spec.ip.map(|ip| ip.to_string()),
                ip6: spec.ip6.map(|ip| ip.to_string()),
                hostname: spec.hostname,
                template: spec.template.into(),
                limits: spec.limits,
            }
        }))
    }

    /// Accounting of one VPS, or of all with `name` None.
    pub fn stat(&self, name: Option<&str>) -> Result<Vec<VpsStat>> {
        let specs = match name {
            Some(n) => vec![self.store.load(&Name::new(n)?)?],
            None => self.store.list()?,
        };
        Ok(in_parallel(specs, |spec| {
            let runtime = self.live_runtime(&spec.name);
            if runtime.is_none() {
                // What a stop raced with a scrape may have left open.
                self.close_cgroup(&spec.name);
            }
            let accounting = runtime.as_ref().map(|r| {
                let mut a = self.open_cgroup(&spec.name, r.started_at).accounting();
                let mut peaks = lock(&self.process_peaks);
                let peak = peaks.entry(spec.id).or_insert((r.started_at, 0));
                if peak.0 != r.started_at {
                    *peak = (r.started_at, 0);
                }
                peak.1 = peak.1.max(a.processes.maxheld);
                a.processes.maxheld = peak.1;
                a
            });
            VpsStat {
                network: runtime
                    .as_ref()
                    .and_then(|_| self.enforcement().net_stats(spec.id)),
                disk_used: VpsDisk::of(&self.store.dir(&spec.name))
                    .usage(spec.disk)
                    .unwrap_or(0),
                disk_limit: spec.limits.disk,
                name: spec.name.to_string(),
                id: spec.id,
                running: runtime.is_some(),
                started_at: runtime.map(|r| r.started_at),
                accounting,
                beancounters: Vec::new(),
            }
            .with_beancounters()
        }))
    }
}

impl Host {
    /// VPS `name`'s cgroup directories, opened once per run (`started_at`
    /// tells runs apart): a scrape then reads each counter file relative
    /// to an open directory instead of walking its path from the root.
    fn open_cgroup(&self, name: &Name, started_at: u64) -> Arc<OpenCgroup> {
        let mut open = lock(&self.open_cgroups);
        match open.get(name) {
            Some((run, dirs)) if *run == started_at => dirs.clone(),
            _ => {
                let dirs = Arc::new(self.cgroup(name).open());
                open.insert(name.clone(), (started_at, dirs.clone()));
                dirs
            }
        }
    }

    /// Close the directories of a VPS that stopped.
    pub(super) fn close_cgroup(&self, name: &Name) {
        lock(&self.open_cgroups).remove(name);
    }
}

/// `f` of every item, in order, spread over the host's cores: a VPS's
/// figures are a dozen small kernel reads, and thousands of VPSs are read
/// per request. No lock is held across them.
fn in_parallel<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Below this many a thread costs more than it saves.
    const PER_THREAD: usize = 64;
    let chunk = items.len().div_ceil(threads).max(PER_THREAD);
    if items.len() <= chunk {
        return items.into_iter().map(f).collect();
    }
    let mut items = items.into_iter();
    let chunks: Vec<Vec<T>> = std::iter::from_fn(|| {
        let c: Vec<T> = items.by_ref().take(chunk).collect();
        (!c.is_empty()).then_some(c)
    })
    .collect();
    std::thread::scope(|scope| {
        let f = &f;
        let workers: Vec<_> = chunks
            .into_iter()
            .map(|c| scope.spawn(move || c.into_iter().map(f).collect::<Vec<U>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a report worker does not panic"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn in_parallel_keeps_the_order_of_many_items_and_of_few() {
        for n in [0, 1, 63, 64, 65, 1000, 3001] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = super::in_parallel(items, |i| i * 2);
            assert_eq!(doubled, (0..n).map(|i| i * 2).collect::<Vec<_>>(), "{n}");
        }
    }
}
