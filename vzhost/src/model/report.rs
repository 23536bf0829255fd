//! What the host reports of its VPSs: rows of `vzhost list` and traffic
//! counters. Shared by the lifecycle, the metrics and the API.
use serde::{Deserialize, Serialize};

use super::Limits;

/// A row of `vzhost list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VpsStatus {
    pub name: String,
    pub status: String,
    pub ip: Option<String>,
    pub hostname: String,
    pub nproc: u64,
    pub template: String,
    pub limits: Limits,
    pub init_pid: Option<u32>,
    /// Traffic seen by the KSAL guards while it runs.
    pub network: Option<NetStats>,
    /// The policy it runs under.
    pub policy: Option<String>,
    /// Its policy's LSM rules are not enforced: this kernel cannot run the
    /// LSM hooks and the policy allows a degraded start.
    pub degraded: bool,
}

/// A VPS's traffic counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub spoofed_dropped: u64,
}
