//! The controllers vzhost limits (memory, cpu, pids) on either cgroup
//! version, one enum for both. cgroups-rs writes and reads the files;
//! what differs by version and it leaves to the caller (swap semantics,
//! "unlimited" spelled as a huge number on v1) and the counters it does
//! not read (memory.events, pids.peak, cpu.stat's keys) are here.
use std::path::Path;

use cgroups_rs::fs::{MaxValue, cpu::CpuController, memory::MemController, pid::PidController};
use serde::Serialize;

use super::{
    accounting::{MemoryEvents, Resource, parse_keyed},
    manager::{ManagerError, Result},
};

/// CFS period for CPU quotas (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// v1 reports "no limit" as a huge page-aligned number.
const V1_UNLIMITED: i64 = 1 << 62;

/// Which cgroup version drives a controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Version {
    V1,
    V2,
}

fn failed(
    setting: &'static str,
    dir: &Path,
) -> impl FnOnce(cgroups_rs::fs::error::Error) -> ManagerError {
    let path = dir.display().to_string();
    move |source| ManagerError::Controller {
        setting,
        path,
        source: Box::new(source),
    }
}

/// A limit as cgroups-rs takes it: -1 is unlimited.
fn signed(limit: Option<u64>) -> i64 {
    limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

impl Version {
    fn v2(self) -> bool {
        self == Self::V2
    }

    /// The memory limit (None: unlimited); on v2 swap included, so that a
    /// limited VPS never escapes its limit into swap.
    pub fn set_memory(self, dir: &Path, bytes: Option<u64>) -> Result<()> {
        let mem = MemController::new(dir.to_owned(), dir.to_owned(), self.v2());
        let err = || failed("memory", dir);
        match self {
            Self::V2 => {
                mem.set_limit(signed(bytes)).map_err(err())?;
                // memory.swap.max is swap alone: none for a limited VPS.
                if dir.join("memory.swap.max").exists() {
                    let swap = if bytes.is_some() { 0 } else { -1 };
                    mem.set_memswap_limit(swap).map_err(err())?;
                }
            }
            // memory.memsw.limit_in_bytes is left alone: at the memory
            // limit it would bound swap, but charges it refuses are counted
            // nowhere on Linux 6.12+ (memsw's failcnt is not tracked), which
            // would blind the failcnt beancounter.
            Self::V1 => mem.set_limit(signed(bytes)).map_err(err())?,
        }
        Ok(())
    }

    /// The CPU quota in µs per [`CPU_PERIOD_US`] (None: unlimited).
    pub fn set_cpu(self, dir: &Path, quota_us: Option<u64>) -> Result<()> {
        CpuController::new(dir.to_owned(), dir.to_owned(), self.v2())
            .set_cfs_quota_and_period(Some(signed(quota_us)), Some(CPU_PERIOD_US))
            .map_err(failed("cpus", dir))
    }

    pub fn set_pids(self, dir: &Path, max: Option<u64>) -> Result<()> {
        let max = max.map_or(MaxValue::Max, |m| MaxValue::Value(signed(Some(m))));
        PidController::new(dir.to_owned(), dir.to_owned(), self.v2())
            .set_pid_max(max)
            .map_err(failed("pids", dir))
    }

    /// Memory held, its peak, limit and limit events.
    pub fn memory(self, dir: &Path) -> (Resource, MemoryEvents) {
        let stat = MemController::new(dir.to_owned(), dir.to_owned(), self.v2()).memory_stat();
        let held = stat.usage_in_bytes;
        let events = match self {
            Self::V2 => {
                let text = read(dir, "memory.events").unwrap_or_default();
                MemoryEvents {
                    max: parse_keyed(&text, "max").unwrap_or(0),
                    oom: Some(parse_keyed(&text, "oom").unwrap_or(0)),
                    oom_kill: parse_keyed(&text, "oom_kill").unwrap_or(0),
                }
            }
            Self::V1 => MemoryEvents {
                max: stat.fail_cnt,
                oom: None,
                oom_kill: stat.oom_control.oom_kill,
            },
        };
        // -1 (v2 "max") or a huge number (v1) when unlimited.
        let limit = stat.limit_in_bytes;
        let resource = Resource {
            held,
            // memory.peak / max_usage_in_bytes; read as 0 where absent.
            maxheld: stat.max_usage_in_bytes.max(held),
            limit: u64::try_from(limit)
                .ok()
                .filter(|&l| l > 0 && limit < V1_UNLIMITED),
            failcnt: events.max,
        };
        (resource, events)
    }

    /// Tasks held, their peak, limit and refused forks (the same files on
    /// both versions).
    pub fn pids(self, dir: &Path) -> Resource {
        let pids = PidController::new(dir.to_owned(), dir.to_owned(), self.v2());
        let held = pids.get_pid_current().unwrap_or(0);
        // pids.peak (Linux 6.5+) is not read by cgroups-rs.
        let peak = read(dir, "pids.peak").and_then(|t| t.trim().parse().ok());
        Resource {
            held,
            maxheld: peak.unwrap_or(0).max(held),
            limit: match pids.get_pid_max() {
                Ok(MaxValue::Value(n)) => u64::try_from(n).ok(),
                _ => None,
            },
            failcnt: pids.get_pid_events().unwrap_or(0),
        }
    }
}

/// CPU time (user, system) in µs from a v2 cgroup's `cpu.stat`, which v2
/// keeps with or without the cpu controller.
pub fn cpu_time(v2: &Path) -> (u64, u64) {
    let stat = CpuController::new(v2.to_owned(), v2.to_owned(), true)
        .cpu()
        .stat;
    (
        parse_keyed(&stat, "user_usec").unwrap_or(0),
        parse_keyed(&stat, "system_usec").unwrap_or(0),
    )
}
