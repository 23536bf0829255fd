//! Per-VPS accounting as administrators read it: OpenVZ-style beancounters
//! for `vzhost stat`, and Prometheus metrics (encoded by prometheus-client)
//! for the daemon's `/metrics` endpoint. Values are gathered fresh for
//! every call; nothing here caches.
pub mod http;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};
use serde::{Deserialize, Serialize};

use crate::{
    cgroup::accounting::{Accounting, Resource},
    model::NetStats,
};

/// Everything vzhost knows of one VPS's use of the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VpsStat {
    pub name: String,
    pub id: u32,
    pub running: bool,
    /// Unix time of the last start, while it runs.
    pub started_at: Option<u64>,
    /// cgroup counters, while it runs.
    pub accounting: Option<Accounting>,
    pub network: Option<NetStats>,
    /// Bytes in the VPS's own layer (its upper directory).
    pub disk_used: u64,
    pub disk_limit: Option<u64>,
    pub beancounters: Vec<Beancounter>,
}

/// One row of `vzhost stat`, after `/proc/user_beancounters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beancounter {
    pub resource: String,
    pub held: u64,
    pub maxheld: Option<u64>,
    pub limit: Option<u64>,
    pub failcnt: Option<u64>,
}

impl Beancounter {
    fn of(resource: &str, r: &Resource) -> Self {
        Self {
            resource: resource.into(),
            held: r.held,
            maxheld: Some(r.maxheld),
            limit: r.limit,
            failcnt: Some(r.failcnt),
        }
    }
}

impl VpsStat {
    /// Fill in the beancounter rows from the other fields.
    pub fn with_beancounters(mut self) -> Self {
        let acct = self.accounting.clone().unwrap_or_default();
        self.beancounters = vec![
            Beancounter::of("numproc", &acct.processes),
            Beancounter::of("memory", &acct.memory),
            Beancounter {
                resource: "oomkills".into(),
                held: acct.memory_events.oom_kill,
                maxheld: None,
                limit: None,
                failcnt: None,
            },
            Beancounter {
                resource: "diskspace".into(),
                held: self.disk_used,
                maxheld: None,
                limit: self.disk_limit,
                failcnt: None,
            },
        ];
        self
    }
}

/// KSAL denials or audit hits of one VPS, hook and rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenialCount {
    pub vps: String,
    pub hook: String,
    pub rule: String,
    /// Enforce for denials, audit for recorded but allowed actions.
    pub mode: crate::policy::Mode,
    pub count: u64,
}

/// One scrape's worth of host-wide figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostStat {
    pub vps: Vec<VpsStat>,
    pub denials: Vec<DenialCount>,
    pub events_dropped: u64,
    pub policy_reload_errors: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VpsLabels {
    vps: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CpuLabels {
    vps: String,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemoryFailureLabels {
    vps: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    vps: String,
    hook: String,
    rule: String,
    mode: String,
}

type Gauges = Family<VpsLabels, Gauge>;
type Counters = Family<VpsLabels, Counter>;

/// Register a family under `name` and hand it back to be filled.
fn family<L, M>(reg: &mut Registry, name: &str, help: &str) -> Family<L, M>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    M: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Default
        + Send
        + Sync
        + std::fmt::Debug
        + 'static,
{
    let f = Family::<L, M>::default();
    reg.register(name, help, f.clone());
    f
}

fn gauge(f: &Gauges, vps: &str, v: u64) {
    f.get_or_create(&VpsLabels { vps: vps.into() })
        .set(i64::try_from(v).unwrap_or(i64::MAX));
}

fn counter(f: &Counters, vps: &str, v: u64) {
    f.get_or_create(&VpsLabels { vps: vps.into() }).inc_by(v);
}

/// The registry of one scrape, filled from `stat`.
pub fn registry(stat: &HostStat) -> Registry {
    let mut reg = Registry::with_prefix("vzhost");
    reg.register(
        "build",
        "vzhost build information",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    let up: Gauges = family(&mut reg, "vps_up", "1 if the VPS is running, 0 if stopped");
    let started: Gauges = family(
        &mut reg,
        "vps_start_time_seconds",
        "Unix time the running VPS was started",
    );
    let cpu: Family<CpuLabels, Counter<f64>> = family(
        &mut reg,
        "vps_cpu_seconds",
        "CPU time used by the VPS's processes, by mode (user, system)",
    );
    let mem: Gauges = family(&mut reg, "vps_memory_bytes", "Memory used by the VPS");
    let mem_peak: Gauges = family(
        &mut reg,
        "vps_memory_peak_bytes",
        "Highest memory use of the VPS since it started",
    );
    let mem_limit: Gauges = family(
        &mut reg,
        "vps_memory_limit_bytes",
        "Memory limit of the VPS (absent when unlimited)",
    );
    let mem_fail: Family<MemoryFailureLabels, Counter> = family(
        &mut reg,
        "vps_memory_failures",
        "Times the VPS hit its memory limit, by kind (max: reclaim at the limit, oom, oom_kill)",
    );
    let procs: Gauges = family(&mut reg, "vps_processes", "Processes (tasks) in the VPS");
    let procs_peak: Gauges = family(
        &mut reg,
        "vps_processes_peak",
        "Highest number of processes in the VPS since it started",
    );
    let procs_limit: Gauges = family(
        &mut reg,
        "vps_processes_limit",
        "Process limit of the VPS (absent when unlimited)",
    );
    let procs_fail: Counters = family(
        &mut reg,
        "vps_process_failures",
        "Forks refused because the VPS was at its process limit",
    );
    let rx_bytes: Counters = family(
        &mut reg,
        "vps_network_receive_bytes",
        "Bytes received by the VPS",
    );
    let tx_bytes: Counters = family(
        &mut reg,
        "vps_network_transmit_bytes",
        "Bytes sent by the VPS",
    );
    let rx_packets: Counters = family(
        &mut reg,
        "vps_network_receive_packets",
        "Packets received by the VPS",
    );
    let tx_packets: Counters = family(
        &mut reg,
        "vps_network_transmit_packets",
        "Packets sent by the VPS",
    );
    let spoofed: Counters = family(
        &mut reg,
        "vps_spoofed_packets_dropped",
        "Packets the VPS sent from an address not its own, dropped by the KSAL",
    );
    let disk: Gauges = family(
        &mut reg,
        "vps_disk_used_bytes",
        "Bytes in the VPS's own layer of its root filesystem",
    );
    let disk_limit: Gauges = family(
        &mut reg,
        "vps_disk_limit_bytes",
        "Disk limit of the VPS (absent when unlimited)",
    );
    let denials: Family<DenialLabels, Counter> = family(
        &mut reg,
        "ksal_denials",
        "Actions the KSAL denied (mode=enforce) or recorded (mode=audit), by VPS, hook and rule",
    );
    let dropped: Counter = Counter::default();
    reg.register(
        "ksal_events_dropped",
        "KSAL events lost because the ring buffer was full or the VPS exceeded its event rate",
        dropped.clone(),
    );
    dropped.inc_by(stat.events_dropped);
    let reload_errors: Counter = Counter::default();
    reg.register(
        "policy_reload_errors",
        "Policy files rejected on load or reload",
        reload_errors.clone(),
    );
    reload_errors.inc_by(stat.policy_reload_errors);

    for v in &stat.vps {
        let n = v.name.as_str();
        gauge(&up, n, u64::from(v.running));
        gauge(&disk, n, v.disk_used);
        if let Some(l) = v.disk_limit {
            gauge(&disk_limit, n, l);
        }
        if let Some(t) = v.started_at {
            gauge(&started, n, t);
        }
        if let Some(a) = &v.accounting {
            for (mode, usec) in [("user", a.cpu_user_usec), ("system", a.cpu_system_usec)] {
                cpu.get_or_create(&CpuLabels {
                    vps: n.into(),
                    mode,
                })
                .inc_by(usec as f64 / 1e6);
            }
            gauge(&mem, n, a.memory.held);
            gauge(&mem_peak, n, a.memory.maxheld);
            if let Some(l) = a.memory.limit {
                gauge(&mem_limit, n, l);
            }
            let ev = &a.memory_events;
            let kinds = [
                ("max", Some(ev.max)),
                ("oom", ev.oom),
                ("oom_kill", Some(ev.oom_kill)),
            ];
            for (kind, value) in kinds {
                if let Some(value) = value {
                    mem_fail
                        .get_or_create(&MemoryFailureLabels {
                            vps: n.into(),
                            kind,
                        })
                        .inc_by(value);
                }
            }
            gauge(&procs, n, a.processes.held);
            gauge(&procs_peak, n, a.processes.maxheld);
            if let Some(l) = a.processes.limit {
                gauge(&procs_limit, n, l);
            }
            counter(&procs_fail, n, a.processes.failcnt);
        }
        if let Some(net) = &v.network {
            counter(&rx_bytes, n, net.rx_bytes);
            counter(&tx_bytes, n, net.tx_bytes);
            counter(&rx_packets, n, net.rx_packets);
            counter(&tx_packets, n, net.tx_packets);
            counter(&spoofed, n, net.spoofed_dropped);
        }
    }
    for d in &stat.denials {
        denials
            .get_or_create(&DenialLabels {
                vps: d.vps.clone(),
                hook: d.hook.clone(),
                rule: d.rule.clone(),
                mode: d.mode.to_string(),
            })
            .inc_by(d.count);
    }
    reg
}

/// The exposition of `stat`: OpenMetrics when the scraper asks for it
/// (Prometheus does), the classic text format otherwise.
pub fn encode(stat: &HostStat, openmetrics: bool) -> (String, &'static str) {
    let reg = registry(stat);
    let mut out = String::new();
    if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &reg).expect("writing to a String");
        (
            out,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &reg)
            .expect("writing to a String");
        (
            out,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HostStat {
        let acct = Accounting {
            cpu_user_usec: 1_500_000,
            cpu_system_usec: 250_000,
            memory: Resource {
                held: 4096,
                maxheld: 8192,
                limit: Some(1 << 20),
                failcnt: 3,
            },
            processes: Resource {
                held: 2,
                maxheld: 5,
                limit: Some(64),
                failcnt: 7,
            },
            ..Default::default()
        };
        HostStat {
            vps: vec![
                VpsStat {
                    name: "web".into(),
                    id: 1,
                    running: true,
                    started_at: Some(1_700_000_000),
                    accounting: Some(acct),
                    network: Some(NetStats {
                        rx_bytes: 100,
                        tx_bytes: 200,
                        ..Default::default()
                    }),
                    disk_used: 61440,
                    disk_limit: None,
                    beancounters: vec![],
                }
                .with_beancounters(),
                VpsStat {
                    name: "db".into(),
                    id: 2,
                    running: false,
                    started_at: None,
                    accounting: None,
                    network: None,
                    disk_used: 0,
                    disk_limit: Some(1 << 30),
                    beancounters: vec![],
                }
                .with_beancounters(),
            ],
            denials: vec![DenialCount {
                vps: "web".into(),
                hook: "file_open".into(),
                rule: "files[0]".into(),
                mode: crate::policy::Mode::Enforce,
                count: 4,
            }],
            events_dropped: 9,
            policy_reload_errors: 1,
        }
    }

    #[test]
    fn exposition_has_conventional_names_and_values() {
        let (text, ctype) = encode(&sample(), false);
        assert!(ctype.starts_with("text/plain; version=0.0.4"));
        for line in [
            "vzhost_vps_up{vps=\"web\"} 1",
            "vzhost_vps_up{vps=\"db\"} 0",
            "vzhost_vps_cpu_seconds_total{vps=\"web\",mode=\"user\"} 1.5",
            "vzhost_vps_memory_bytes{vps=\"web\"} 4096",
            "vzhost_vps_memory_limit_bytes{vps=\"web\"} 1048576",
            "vzhost_vps_memory_failures_total{vps=\"web\",kind=\"max\"} 0",
            "vzhost_vps_process_failures_total{vps=\"web\"} 7",
            "vzhost_vps_network_receive_bytes_total{vps=\"web\"} 100",
            "vzhost_vps_network_transmit_bytes_total{vps=\"web\"} 200",
            "vzhost_vps_disk_limit_bytes{vps=\"db\"} 1073741824",
            "vzhost_ksal_denials_total{vps=\"web\",hook=\"file_open\",rule=\"files[0]\",mode=\"enforce\"} 4",
            "vzhost_ksal_events_dropped_total 9",
            "vzhost_policy_reload_errors_total 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.contains("# HELP vzhost_vps_up "));
        // A stopped VPS has no live figures, not zeros.
        assert!(!text.contains("vzhost_vps_memory_bytes{vps=\"db\"}"));
        let (om, ctype) = encode(&sample(), true);
        assert!(ctype.starts_with("application/openmetrics-text"));
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn beancounters_follow_the_cgroup_figures() {
        let s = sample();
        let rows = &s.vps[0].beancounters;
        let numproc = rows.iter().find(|r| r.resource == "numproc").unwrap();
        assert_eq!(
            (
                numproc.held,
                numproc.maxheld,
                numproc.limit,
                numproc.failcnt
            ),
            (2, Some(5), Some(64), Some(7))
        );
        let disk = s.vps[1]
            .beancounters
            .iter()
            .find(|r| r.resource == "diskspace")
            .unwrap();
        assert_eq!((disk.held, disk.limit), (0, Some(1 << 30)));
    }
}
