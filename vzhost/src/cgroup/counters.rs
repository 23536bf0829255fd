//! Reading a VPS's counters from its cgroup directories: each directory is
//! opened once per run of the VPS ([`OpenCgroup`]) and its files are read
//! relative to it, and only the files a figure needs. A scrape at thousands of VPSs reads some ten files per VPS;
//! walking the long path down `/sys/fs/cgroup` for each file, and reading
//! the dozen files cgroups-rs's `memory_stat` gathers to report four
//! numbers, were most of its cost.
use std::{os::fd::OwnedFd, path::Path};

use nix::{
    fcntl::{OFlag, open, openat},
    sys::stat::Mode,
};

use super::{
    accounting::{Accounting, MemoryEvents, Resource, parse_keyed},
    controllers::Version,
};

/// A VPS's cgroup directories, open: the v2 one, and where its memory and
/// pids controllers live (the same directory on pure v2). Held for as long
/// as the VPS runs, and no longer: an open directory of a removed cgroup
/// keeps the dying cgroup in the kernel.
pub struct OpenCgroup {
    pub(super) v2: Option<CgroupDir>,
    pub(super) memory: Option<(Version, CgroupDir)>,
    pub(super) pids: Option<(Version, CgroupDir)>,
}

impl OpenCgroup {
    /// What the VPS uses now, from its cgroup files.
    pub fn accounting(&self) -> Accounting {
        let (cpu_user_usec, cpu_system_usec) = self
            .v2
            .as_ref()
            .map(CgroupDir::cpu_time)
            .unwrap_or_default();
        let (memory, memory_events) = self
            .memory
            .as_ref()
            .map(|(v, d)| d.memory(*v))
            .unwrap_or_default();
        Accounting {
            cpu_user_usec,
            cpu_system_usec,
            memory,
            memory_events,
            processes: self
                .pids
                .as_ref()
                .map(|(_, d)| d.pids())
                .unwrap_or_default(),
        }
    }

    /// Tasks, as the numproc beancounter counts them (None without the
    /// pids controller).
    pub fn tasks(&self) -> Option<u64> {
        self.pids.as_ref()?.1.pids_current()
    }
}

/// v1 reports "no limit" as a huge page-aligned number.
const V1_UNLIMITED: u64 = 1 << 62;

/// A cgroup directory, open.
pub(super) struct CgroupDir(OwnedFd);

impl CgroupDir {
    pub(super) fn open(dir: &Path) -> Option<Self> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        open(dir, flags, Mode::empty()).ok().map(Self)
    }

    /// The text of `file` in it (a few lines: counters, not listings).
    pub(super) fn read(&self, file: &str) -> Option<String> {
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        crate::sys::read_small(openat(&self.0, file, flags, Mode::empty()).ok()?)
    }

    /// A file holding one number; None when absent or "max".
    fn number(&self, file: &str) -> Option<u64> {
        self.read(file)?.trim().parse().ok()
    }

    /// The value of `key` in a flat-keyed file.
    fn keyed(&self, file: &str, key: &str) -> Option<u64> {
        parse_keyed(&self.read(file)?, key)
    }

    /// Memory held, its peak, limit and limit events.
    pub(super) fn memory(&self, version: Version) -> (Resource, MemoryEvents) {
        let (held, peak, limit, events) = match version {
            Version::V2 => {
                let text = self.read("memory.events").unwrap_or_default();
                let events = MemoryEvents {
                    max: parse_keyed(&text, "max").unwrap_or(0),
                    oom: Some(parse_keyed(&text, "oom").unwrap_or(0)),
                    oom_kill: parse_keyed(&text, "oom_kill").unwrap_or(0),
                };
                (
                    self.number("memory.current"),
                    // memory.peak exists from Linux 5.19.
                    self.number("memory.peak"),
                    self.number("memory.max"),
                    events,
                )
            }
            Version::V1 => (
                self.number("memory.usage_in_bytes"),
                self.number("memory.max_usage_in_bytes"),
                self.number("memory.limit_in_bytes")
                    .filter(|&l| l < V1_UNLIMITED),
                MemoryEvents {
                    max: self.number("memory.failcnt").unwrap_or(0),
                    oom: None,
                    oom_kill: self.keyed("memory.oom_control", "oom_kill").unwrap_or(0),
                },
            ),
        };
        let held = held.unwrap_or(0);
        let resource = Resource {
            held,
            maxheld: peak.unwrap_or(0).max(held),
            limit: limit.filter(|&l| l > 0),
            failcnt: events.max,
        };
        (resource, events)
    }

    /// Tasks held, their peak, limit and refused forks (the same files on
    /// both versions).
    pub(super) fn pids(&self) -> Resource {
        let held = self.pids_current().unwrap_or(0);
        Resource {
            held,
            // pids.peak exists from Linux 6.5.
            maxheld: self.number("pids.peak").unwrap_or(0).max(held),
            limit: self.number("pids.max"),
            failcnt: self.keyed("pids.events", "max").unwrap_or(0),
        }
    }

    pub(super) fn pids_current(&self) -> Option<u64> {
        self.number("pids.current")
    }

    /// CPU time (user, system) in µs from a v2 cgroup's `cpu.stat`, which
    /// v2 keeps with or without the cpu controller.
    pub(super) fn cpu_time(&self) -> (u64, u64) {
        let stat = self.read("cpu.stat").unwrap_or_default();
        (
            parse_keyed(&stat, "user_usec").unwrap_or(0),
            parse_keyed(&stat, "system_usec").unwrap_or(0),
        )
    }
}
