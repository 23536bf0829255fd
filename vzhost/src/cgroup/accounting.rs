//! What a VPS uses, read fresh from its cgroup files on either layout:
//! the v2 files where a controller lives in the unified tree, the v1
//! equivalents on hybrid hosts (see `controllers`). These are the kernel's
//! own counters, so `vzhost stat` and `/metrics` agree with what an
//! administrator reads by hand.
use serde::{Deserialize, Serialize};

/// One limited resource, as OpenVZ's beancounters show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub held: u64,
    /// The kernel's high-water mark where it keeps one (memory.peak,
    /// pids.peak, memory.max_usage_in_bytes), otherwise the highest value
    /// the daemon has read.
    pub maxheld: u64,
    /// None when unlimited.
    pub limit: Option<u64>,
    /// Times the limit refused or throttled something.
    pub failcnt: u64,
}

/// Memory limit events; `oom` is None on v1, which does not count it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEvents {
    pub max: u64,
    pub oom: Option<u64>,
    pub oom_kill: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    pub cpu_user_usec: u64,
    pub cpu_system_usec: u64,
    /// Bytes.
    pub memory: Resource,
    pub memory_events: MemoryEvents,
    /// Processes (tasks).
    pub processes: Resource,
}

/// The value of `key` in a flat-keyed file ("key value" per line).
pub fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_parse() {
        let events = "low 0\nhigh 0\nmax 17\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_keyed(events, "max"), Some(17));
        assert_eq!(parse_keyed(events, "oom_kill"), Some(1));
        assert_eq!(parse_keyed(events, "oom_group"), None);
        assert_eq!(parse_keyed("max.imposed 3\nmax 4\n", "max"), Some(4));
    }
}
