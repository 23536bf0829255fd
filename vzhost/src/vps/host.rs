//! The host: the state store, templates, cgroups, network and enforcement
//! that every verb acts on. Verbs live in files of their own (create, run,
//! destroy, set, passwd, report, exec); this file holds what they share.
//!
//! Locking: there is no lock around the host. Each VPS has a lock of its
//! own that a verb on it holds for its whole run, so two operations on one
//! VPS run one after the other (no double start) while list, stat,
//! metrics and every other VPS go on. Enforcement sits behind a short lock
//! of its own (map updates only); creation holds one to allocate ids.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use super::{ranges::RangeRegistry, store::Store};
use crate::{
    cgroup::{
        counters::OpenCgroup,
        manager::{Hierarchy, VpsCgroup},
    },
    enforce::{EventNames, Stage},
    model::{InitExit, Name, Runtime},
    net::NetConfig,
    policy::{Policy, watch::FileStatus},
    rootfs::Templates,
    sys::is_same_process,
};

pub use crate::enforce::Enforcement;

/// A mutex's guard even if a panicking holder poisoned it: every value
/// behind these locks stays consistent between statements.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The host: state store, templates, cgroups, network and enforcement.
pub struct Host {
    pub(super) store: Store,
    pub(super) templates: Templates,
    pub(super) cgroups: Hierarchy,
    /// The vzhost binary, re-executed for the launch and attach helpers.
    pub(super) exe: PathBuf,
    pub(super) net: NetConfig,
    pub(super) enforcement: Mutex<Enforcement>,
    /// User-id ranges reserved host-wide, shared with other daemons.
    pub(super) ranges: RangeRegistry,
    /// One lock per VPS name, made on first use.
    vps_locks: Mutex<HashMap<Name, Arc<Mutex<()>>>>,
    /// Held while a create picks its id, id range and address.
    pub(super) allocation: Mutex<()>,
    /// Highest process count seen per VPS id in its current run (keyed by
    /// start time), for kernels without pids.peak.
    pub(super) process_peaks: Mutex<HashMap<u32, (u64, u64)>>,
    /// Inits watched for an exit of their own (see `watch`).
    pub(super) watcher: super::watch::Watcher,
    /// How each VPS's init last ended by itself.
    pub(super) last_exits: Mutex<HashMap<Name, InitExit>>,
    /// Running VPSs' cgroup directories, open, by the run they belong to.
    pub(super) open_cgroups: Mutex<HashMap<Name, (u64, Arc<OpenCgroup>)>>,
}

impl Host {
    pub fn new(
        store: Store,
        cgroups: Hierarchy,
        enforcement: Enforcement,
        exe: PathBuf,
        net: NetConfig,
        ranges: RangeRegistry,
    ) -> Self {
        Self {
            ranges,
            templates: Templates::new(store.root()),
            store,
            cgroups,
            exe,
            net,
            enforcement: Mutex::new(enforcement),
            vps_locks: Mutex::default(),
            allocation: Mutex::default(),
            process_peaks: Mutex::default(),
            watcher: super::watch::Watcher::new(),
            last_exits: Mutex::default(),
            open_cgroups: Mutex::default(),
        }
    }

    /// VPS `name`'s own lock, to hold for the whole of a verb on it.
    pub(super) fn vps_lock(&self, name: &Name) -> Arc<Mutex<()>> {
        lock(&self.vps_locks)
            .entry(name.clone())
            .or_default()
            .clone()
    }

    pub(super) fn enforcement(&self) -> MutexGuard<'_, Enforcement> {
        lock(&self.enforcement)
    }

    pub(super) fn cgroup(&self, name: &Name) -> VpsCgroup {
        self.cgroups.vps(name.as_str())
    }

    /// The runtime of a VPS whose init is still the process it started.
    pub(super) fn live_runtime(&self, name: &Name) -> Option<Runtime> {
        self.store
            .runtime(name)
            .filter(|r| is_same_process(r.init_pid, r.init_start))
    }

    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    pub fn exe(&self) -> &std::path::Path {
        &self.exe
    }

    pub fn policy(&self, name: &str) -> Option<Policy> {
        self.enforcement().policy(name)
    }

    pub fn policy_files(&self) -> Vec<FileStatus> {
        self.enforcement().policy_files()
    }

    pub fn policy_reload_errors(&self) -> u64 {
        self.enforcement().policy_reload_errors()
    }

    /// Events the KSAL could not deliver.
    pub fn events_dropped(&self) -> u64 {
        self.enforcement().events_dropped()
    }

    /// What the numbers KSAL events carry stand for, read once.
    pub fn event_names(&self) -> EventNames {
        let specs = self.store.list().unwrap_or_default();
        self.enforcement().event_names(&specs)
    }

    /// Read the policies directory again and put every running VPS under
    /// what is now in force. Returns whether anything changed.
    pub fn reload_policies(&self) -> bool {
        if !self.enforcement().reload() {
            return false;
        }
        for spec in self.store.list().unwrap_or_default() {
            if self.live_runtime(&spec.name).is_none() {
                continue;
            }
            let applied = match self.cgroup(&spec.name).id() {
                Ok(id) => self
                    .enforcement()
                    .apply(&spec, id, Stage::Built, None)
                    .map(drop),
                Err(e) => {
                    tracing::error!(vps = %spec.name, "ENFORCEMENT: new policy not applied: {e}");
                    continue;
                }
            };
            if let Err(e) = applied {
                tracing::error!(vps = %spec.name, "ENFORCEMENT: new policy not applied: {e}");
            }
        }
        true
    }

    /// On a clean daemon exit: remove this daemon's v1 directories if no
    /// VPS runs in them (running VPSs keep theirs).
    pub fn shutdown(&self) {
        self.cgroups.remove_v1_parents();
    }
}
