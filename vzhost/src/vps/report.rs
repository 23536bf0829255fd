//! `vzhost list` and `vzhost stat`: what each VPS is and uses, read
//! without any VPS's lock, so a long stop never holds them up.
use super::{
    error::Result,
    host::{Host, lock},
};
use crate::{
    metrics::VpsStat,
    model::{Name, Status, VpsStatus},
    rootfs::disk::VpsDisk,
};

impl Host {
    pub fn list(&self) -> Result<Vec<VpsStatus>> {
        let specs = self.store.list()?;
        let enforcement = self.enforcement();
        Ok(specs
            .into_iter()
            .map(|spec| {
                let runtime = self.live_runtime(&spec.name);
                let running = runtime.is_some();
                VpsStatus {
                    status: if running {
                        Status::Running
                    } else {
                        Status::Stopped
                    },
                    init_pid: runtime.as_ref().map(|r| r.init_pid),
                    network: running.then(|| enforcement.net_stats(spec.id)).flatten(),
                    degraded: running && enforcement.is_degraded(&spec),
                    policy: enforcement.policy_of(&spec).ok().map(|p| p.name),
                    nproc: if running {
                        self.cgroup(&spec.name).usage().nproc
                    } else {
                        0
                    },
                    last_exit: self.last_exit(&spec.name),
                    name: spec.name.to_string(),
                    ip: spec.ip.map(|ip| ip.to_string()),
                    hostname: spec.hostname,
                    template: spec.template.into(),
                    limits: spec.limits,
                }
            })
            .collect())
    }

    /// Accounting of one VPS, or of all with `name` None.
    pub fn stat(&self, name: Option<&str>) -> Result<Vec<VpsStat>> {
        let specs = match name {
            Some(n) => vec![self.store.load(&Name::new(n)?)?],
            None => self.store.list()?,
        };
        Ok(specs
            .into_iter()
            .map(|spec| {
                let runtime = self.live_runtime(&spec.name);
                let accounting = runtime.as_ref().map(|r| {
                    let mut a = self.cgroup(&spec.name).accounting();
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
            })
            .collect())
    }
}
