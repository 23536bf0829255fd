//! The controllers vzhost limits (memory, cpu, pids) on either cgroup
//! version, one enum for both. cgroups-rs writes the limits; what differs
//! by version and it leaves to the caller (swap semantics) is here. The
//! counters are read in `counters`.
use std::path::Path;

use cgroups_rs::fs::{MaxValue, cpu::CpuController, memory::MemController, pid::PidController};
use serde::Serialize;

use super::manager::{ManagerError, Result};

/// CFS period for CPU quotas (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

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
}
