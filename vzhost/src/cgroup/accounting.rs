//! What a VPS uses, read fresh from its cgroup files on either layout:
//! the v2 files where a controller lives in the unified tree, the v1
//! equivalents on hybrid hosts. These are the kernel's own counters, so
//! `vzhost stat` and `/metrics` agree with what an administrator reads by hand.
use std::{fs, path::Path};

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

/// v1 reports "no limit" as a huge page-aligned number.
const V1_UNLIMITED: u64 = 1 << 62;

fn read(dir: &Path, file: &str) -> Option<String> {
    fs::read_to_string(dir.join(file)).ok()
}

/// A single-value file: a number, or "max" (None).
pub fn parse_single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file ("key value" per line).
pub fn parse_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn single(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file).as_deref().and_then(parse_single)
}

fn keyed(dir: &Path, file: &str, key: &str) -> Option<u64> {
    read(dir, file).and_then(|t| parse_keyed(&t, key))
}

/// CPU time from the v2 cgroup's core `cpu.stat`, present with or
/// without the cpu controller.
pub fn cpu(v2: &Path) -> (u64, u64) {
    let text = read(v2, "cpu.stat").unwrap_or_default();
    (
        parse_keyed(&text, "user_usec").unwrap_or(0),
        parse_keyed(&text, "system_usec").unwrap_or(0),
    )
}

pub fn memory_v2(dir: &Path) -> (Resource, MemoryEvents) {
    let held = single(dir, "memory.current").unwrap_or(0);
    let events = read(dir, "memory.events").unwrap_or_default();
    let ev = MemoryEvents {
        max: parse_keyed(&events, "max").unwrap_or(0),
        oom: Some(parse_keyed(&events, "oom").unwrap_or(0)),
        oom_kill: parse_keyed(&events, "oom_kill").unwrap_or(0),
    };
    let res = Resource {
        held,
        maxheld: single(dir, "memory.peak").unwrap_or(held),
        limit: single(dir, "memory.max"),
        failcnt: ev.max,
    };
    (res, ev)
}

pub fn memory_v1(dir: &Path) -> (Resource, MemoryEvents) {
    let held = single(dir, "memory.usage_in_bytes").unwrap_or(0);
    let failcnt = single(dir, "memory.failcnt").unwrap_or(0);
    let res = Resource {
        held,
        maxheld: single(dir, "memory.max_usage_in_bytes").unwrap_or(held),
        limit: single(dir, "memory.limit_in_bytes").filter(|&l| l < V1_UNLIMITED),
        failcnt,
    };
    let ev = MemoryEvents {
        max: failcnt,
        oom: None,
        oom_kill: keyed(dir, "memory.oom_control", "oom_kill").unwrap_or(0),
    };
    (res, ev)
}

/// The pids files are the same on v1 and v2.
pub fn pids(dir: &Path) -> Resource {
    let held = single(dir, "pids.current").unwrap_or(0);
    Resource {
        held,
        maxheld: single(dir, "pids.peak").unwrap_or(held),
        limit: single(dir, "pids.max"),
        failcnt: keyed(dir, "pids.events", "max").unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_parse() {
        let events = "low 0\nhigh 0\nmax 17\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_keyed(events, "max"), Some(17));
        assert_eq!(parse_keyed(events, "oom_kill"), Some(1));
        assert_eq!(parse_keyed(events, "missing"), None);
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_keyed(oom_control, "oom_kill"), Some(3));
    }

    #[test]
    fn single_files_parse_max_as_unlimited() {
        assert_eq!(parse_single("max\n"), None);
        assert_eq!(parse_single("4096\n"), Some(4096));
    }

    #[test]
    fn reads_v2_and_v1_files() {
        let d = std::env::temp_dir().join(format!("vzhost-acct-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        for (f, v) in [
            ("memory.current", "1000\n"),
            ("memory.peak", "5000\n"),
            ("memory.max", "max\n"),
            ("memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"),
            ("memory.usage_in_bytes", "2000\n"),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.failcnt", "6\n"),
            ("pids.current", "3\n"),
            ("pids.max", "64\n"),
            ("pids.events", "max 9\n"),
        ] {
            fs::write(d.join(f), v).unwrap();
        }
        let (m, ev) = memory_v2(&d);
        assert_eq!(
            (m.held, m.maxheld, m.limit, m.failcnt),
            (1000, 5000, None, 4)
        );
        assert_eq!(ev.oom, Some(1));
        let (m1, ev1) = memory_v1(&d);
        assert_eq!(
            (m1.held, m1.maxheld, m1.limit, m1.failcnt),
            (2000, 2000, None, 6)
        );
        assert_eq!(ev1.oom, None);
        let p = pids(&d);
        assert_eq!((p.held, p.maxheld, p.limit, p.failcnt), (3, 3, Some(64), 9));
        fs::remove_dir_all(&d).unwrap();
    }
}
