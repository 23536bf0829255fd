//! What the host reports of its VPSs: rows of `vzhost list`, traffic
//! counters and the verdicts of KSAL events. Shared by the lifecycle, the
//! KSAL, the metrics and the API.
use serde::{Deserialize, Serialize};

use super::Limits;

/// A row of `vzhost list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VpsStatus {
    pub name: String,
    pub status: Status,
    pub ip: Option<String>,
    #[serde(default)]
    pub ip6: Option<String>,
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
    /// How its init last ended by itself (since this daemon started).
    #[serde(default)]
    pub last_exit: Option<super::InitExit>,
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

/// Whether a VPS runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the KSAL did about an action its policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Refused (the policy enforces).
    Denied,
    /// Allowed and recorded (the policy audits).
    Audited,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::Audited => "audited",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_verdicts_keep_their_json_strings() {
        for (s, json) in [
            (Status::Running, "\"running\""),
            (Status::Stopped, "\"stopped\""),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), json);
            assert_eq!(serde_json::from_str::<Status>(json).unwrap(), s);
            assert_eq!(format!("\"{s}\""), json);
        }
        for (v, json) in [
            (Verdict::Denied, "\"denied\""),
            (Verdict::Audited, "\"audited\""),
        ] {
            assert_eq!(serde_json::to_string(&v).unwrap(), json);
            assert_eq!(serde_json::from_str::<Verdict>(json).unwrap(), v);
            assert_eq!(format!("\"{v}\""), json);
        }
        assert!(serde_json::from_str::<Status>("\"paused\"").is_err());
    }
}
