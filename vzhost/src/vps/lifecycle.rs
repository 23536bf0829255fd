//! What the daemon does to VPSs: create, start, stop, restart, destroy, set
//! limits, list, set passwords, and adopt running VPSs after a restart.
//! Every step that fails midway undoes what it did: a failed create
//! leaves nothing, a failed start leaves the VPS stopped and intact.
use std::{
    collections::BTreeMap,
    fs,
    os::{fd::AsFd as _, unix::fs::PermissionsExt as _},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use ksal_common::{VpsEntry, guard};
use serde::{Deserialize, Serialize};

pub use super::error::{LifecycleError, Result};
use super::store::{Store, StoreError};
use crate::{
    cgroup::manager::{Hierarchy, ManagerError, VpsCgroup},
    ksal::{EgressDeny, Ksal, VpsRules},
    metrics::VpsStat,
    model::{
        IdMap, Limits, Name, NetStats, Runtime, Spec, SpecError, Status, VpsDir, VpsStatus,
        validate_hostname,
    },
    net::NetConfig,
    ns::{attach::AttachPlan, helper, launch::LaunchPlan},
    policy::{
        self, Policy,
        watch::{FileStatus, PolicyDir},
    },
    rootfs::{
        Templates,
        disk::{VpsDisk, has_project_quota},
    },
    sys::{
        is_same_process, pidfd_open, pidfd_send_signal, pidfd_wait_exit, process_start_time,
        stat_in_root_of,
    },
};

/// What `vzhost create` asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateRequest {
    pub name: String,
    pub template: Option<String>,
    pub hostname: Option<String>,
    pub limits: Limits,
    pub labels: BTreeMap<String, String>,
    pub stop_timeout: Option<u64>,
    /// Host id range for the VPS's users; allocated when absent.
    #[serde(default)]
    pub idmap: Option<IdMap>,
    /// Its address (ADDRESS or ADDRESS/PREFIX); allocated when absent.
    #[serde(default)]
    pub ip: Option<String>,
    /// The policy it runs under, instead of the one its name and labels select.
    #[serde(default)]
    pub policy: Option<String>,
}

const DEFAULT_TEMPLATE: &str = crate::rootfs::BUILTIN_BUSYBOX;
const DEFAULT_STOP_TIMEOUT: u64 = 10;
const INIT: &[&str] = &["/sbin/init"];
/// How long the VPS's own shell may take to write its /etc/shadow.
const PASSWD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The host: state store, templates, cgroups and the KSAL.
pub struct Host {
    store: Store,
    templates: Templates,
    cgroups: Hierarchy,
    ksal: Option<Ksal>,
    /// The vzhost binary, re-executed for the launch and attach helpers.
    exe: PathBuf,
    net: NetConfig,
    policies: PolicyDir,
    /// Why the LSM hooks are not loaded, if they are not.
    lsm_error: Option<String>,
    /// Names of the rule ids ever put in the maps, for events and metrics.
    rule_names: std::collections::HashMap<u32, String>,
    /// Highest process count seen per VPS id in its current run (keyed by
    /// start time), for kernels without pids.peak.
    process_peaks: std::collections::HashMap<u32, (u64, u64)>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Host {
    pub fn new(
        store: Store,
        cgroups: Hierarchy,
        (ksal, lsm_error): (Option<Ksal>, Option<String>),
        exe: PathBuf,
        net: NetConfig,
        policies: PolicyDir,
    ) -> Self {
        Self {
            templates: Templates::new(store.root()),
            store,
            cgroups,
            ksal,
            exe,
            net,
            policies,
            lsm_error,
            rule_names: Default::default(),
            process_peaks: Default::default(),
        }
    }

    /// The policy VPS `spec` runs under.
    fn policy_of(&self, spec: &Spec) -> Result<Policy> {
        let set = self.policies.set();
        set.for_vps(spec.policy.as_deref(), spec.name.as_str(), &spec.labels)
            .cloned()
            .ok_or_else(|| LifecycleError::NoPolicy {
                name: spec.name.to_string(),
                policy: spec.policy.clone().unwrap_or_default(),
            })
    }

    /// Whether `policy` runs degraded here; an error when it needs LSM
    /// hooks this kernel cannot run and does not allow that.
    fn degraded(&self, name: &Name, policy: &Policy) -> Result<bool> {
        let Some((hooks, why)) = self.missing_lsm(policy) else {
            return Ok(false);
        };
        if policy.allow_degraded {
            tracing::warn!(
                vps = %name,
                policy = %policy.name,
                "DEGRADED: the policy's LSM rules ({}) are not enforced: {why}",
                hooks.join(", ")
            );
            return Ok(true);
        }
        Err(LifecycleError::Start {
            name: name.to_string(),
            why: format!(
                "its policy {} needs the LSM hooks {} and this kernel cannot run them ({why}); \
                 run it on a kernel with BPF LSM enabled, or set `allow_degraded: true` in the \
                 policy to start it with the cgroup hooks only",
                policy.name,
                hooks.join(", ")
            ),
        })
    }

    /// The LSM hooks `policy` needs that this kernel cannot run, and why.
    fn missing_lsm(&self, policy: &Policy) -> Option<(Vec<&'static str>, &str)> {
        let hooks = policy.lsm_hooks();
        let why = self.lsm_error.as_deref().filter(|_| !hooks.is_empty())?;
        Some((hooks, why))
    }

    /// The kernel rules of `policy` for VPS `spec`; file rules need its
    /// running init (paths resolve inside its root) and the LSM hooks.
    fn kernel_rules(&mut self, spec: &Spec, policy: &Policy, init_pid: Option<u32>) -> VpsRules {
        let names = policy.rule_names();
        let mut rules = VpsRules::default();
        let (file_names, net_names) = names.split_at(policy.files.deny.len());
        for (rule, rule_name) in policy.network.deny_egress.iter().zip(net_names) {
            let rule_id = policy::rule_id(rule_name);
            self.rule_names.insert(rule_id, rule_name.clone());
            rules.egress.push(EgressDeny {
                net: rule.cidr.addr,
                prefix: rule.cidr.prefix,
                port: rule.port,
                rule_id,
            });
        }
        if init_pid.is_some() {
            // cgroup hooks: they hold with or without LSM.
            if let Some(d) = &policy.devices {
                rules.devices = d.allow.iter().map(|r| (r.key(), r.access)).collect();
            }
            if let Some(s) = &policy.sysctl {
                rules.sysctls = s.allow_write.iter().map(policy::SysctlName::key).collect();
            }
        }
        let Some(pid) = init_pid.filter(|_| self.lsm_error.is_none()) else {
            return rules;
        };
        rules.mount_types = policy
            .mounts
            .allow_types
            .iter()
            .flatten()
            .map(policy::FsType::key)
            .collect();
        for (rule, rule_name) in policy.files.deny.iter().zip(file_names) {
            let rule_id = policy::rule_id(rule_name);
            self.rule_names.insert(rule_id, rule_name.clone());
            match stat_in_root_of(pid, rule.path.as_str()) {
                Ok((dev, ino)) => rules.files.push((
                    crate::ksal::file_key_of(spec.id, dev, ino),
                    ksal_common::FileRule {
                        rule_id,
                        access: rule.access_bits(),
                    },
                )),
                // A rule for a file the VPS does not have holds nothing yet.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    vps = %spec.name,
                    rule = %rule_name,
                    path = rule.path.as_str(),
                    "cannot resolve the rule's path: {e}"
                ),
            }
        }
        rules
    }

    /// Put running VPS `spec` under its policy now.
    fn apply_policy(&mut self, spec: &Spec, init_pid: Option<u32>) -> Result<bool> {
        let policy = self.policy_of(spec)?;
        let degraded = self.degraded(&spec.name, &policy)?;
        let rules = self.kernel_rules(spec, &policy, init_pid);
        let cgroup_id = self
            .cgroup(&spec.name)
            .id()
            .map_err(Self::cgroup_err(&spec.name))?;
        // The guards start once the VPS is built: its launcher mounts and
        // uses capabilities as VPS root while it builds it.
        let guards = match (init_pid, &self.lsm_error) {
            (None, _) => 0,
            (Some(_), None) => policy.guards(),
            // Without LSM only the cgroup hooks' guards can hold.
            (Some(_), Some(_)) => policy.guards() & (guard::DEVICES | guard::SYSCTL),
        };
        let guarded = init_pid.is_some() && self.lsm_error.is_none();
        let entry = VpsEntry {
            vps_id: spec.id,
            mode: policy.mode.kernel(),
            guards,
            _pad: 0,
            caps_denied: if guarded { policy.caps_denied() } else { 0 },
        };
        if let Some(ksal) = &mut self.ksal {
            ksal.register_entry(cgroup_id, entry)
                .and_then(|()| ksal.sync_rules(spec.id, rules))
                .map_err(|source| LifecycleError::Ksal {
                    name: spec.name.to_string(),
                    source: Box::new(source),
                })?;
        }
        tracing::info!(vps = %spec.name, policy = %policy.name, mode = %policy.mode, degraded, "policy applied");
        Ok(degraded)
    }

    /// Read the policies directory again and put every running VPS under
    /// what is now in force. Returns whether anything changed.
    pub fn reload_policies(&mut self) -> bool {
        if !self.policies.reload() {
            return false;
        }
        for spec in self.store.list().unwrap_or_default() {
            if let Some(r) = self.live_runtime(&spec.name)
                && let Err(e) = self.apply_policy(&spec, Some(r.init_pid))
            {
                tracing::error!(vps = %spec.name, "ENFORCEMENT: new policy not applied: {e}");
            }
        }
        true
    }

    pub fn policy_files(&self) -> Vec<FileStatus> {
        self.policies.status()
    }

    pub fn policy(&self, name: &str) -> Option<Policy> {
        self.policies.set().policies.get(name).cloned()
    }

    pub fn policy_reload_errors(&self) -> u64 {
        self.policies.reload_errors
    }

    /// What the numbers KSAL events carry stand for, read once.
    pub fn event_names(&self) -> EventNames {
        let vps = self
            .store
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|spec| {
                let policy = self.policy_of(&spec).ok().map(|p| p.name);
                (spec.id, (spec.name.to_string(), policy))
            })
            .collect();
        EventNames {
            vps,
            rules: self.rule_names.clone(),
        }
    }

    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    fn io(name: &Name, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LifecycleError {
        let name = name.to_string();
        let what = what.into();
        move |source| LifecycleError::Io { name, what, source }
    }

    fn cgroup_err(name: &Name) -> impl FnOnce(ManagerError) -> LifecycleError {
        let name = name.to_string();
        move |source| LifecycleError::Cgroup { name, source }
    }

    pub fn create(&mut self, req: &CreateRequest) -> Result<Spec> {
        let name = Name::new(&req.name)?;
        let hostname = req.hostname.clone().unwrap_or_else(|| name.to_string());
        validate_hostname(&hostname)?;
        req.limits.validate()?;
        if self.store.exists(&name) {
            return Err(StoreError::Exists(name.to_string()).into());
        }
        let template = req
            .template
            .clone()
            .unwrap_or_else(|| DEFAULT_TEMPLATE.into());
        self.templates.resolve(&template)?;
        if let Some(p) = &req.policy
            && self.policy(p).is_none()
        {
            return Err(SpecError::Field {
                field: "policy",
                value: p.clone(),
                why: "no such policy is in force; `vzhost policy list` shows them".into(),
            }
            .into());
        }
        let existing = self.store.list()?;
        let idmap = match req.idmap {
            Some(m) => {
                validate_idmap(&m)?;
                if let Some(other) = existing.iter().find(|s| s.idmap.overlaps(&m)) {
                    return Err(SpecError::Field {
                        field: "uid-base",
                        value: m.base.to_string(),
                        why: format!(
                            "ids {}..{} overlap VPS {}'s range {}..{}; pick a free range",
                            m.base,
                            m.base as u64 + m.count as u64,
                            other.name,
                            other.idmap.base,
                            other.idmap.base as u64 + other.idmap.count as u64
                        ),
                    }
                    .into());
                }
                m
            }
            None => allocate_idmap(existing.iter().map(|s| s.idmap))?,
        };
        let id = existing.iter().map(|s| s.id).max().unwrap_or(0) + 1;
        let used: Vec<(String, std::net::Ipv4Addr)> = existing
            .iter()
            .filter_map(|s| s.ip.map(|ip| (s.name.to_string(), ip.addr)))
            .collect();
        let ip = match &req.ip {
            Some(want) => self.net.check(want, &used)?,
            None => self.net.allocate(&used)?,
        };
        let mut spec = Spec {
            name,
            template,
            hostname,
            limits: req.limits.clone(),
            idmap,
            labels: req.labels.clone(),
            stop_timeout: req.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
            id,
            disk: None,
            ip: Some(ip),
            policy: req.policy.clone(),
        };
        // Limits the command line leaves unset come from the policy.
        spec.limits = self.policy_of(&spec)?.fill_limits(&spec.limits);
        spec.limits.validate()?;
        spec.disk = spec
            .limits
            .disk
            .map(|_| VpsDisk::choose_backend(&self.store.root().join("vps"), project_id(id)));
        let gateway = self.net.subnet.gateway();
        self.store.create(&spec, |dir| {
            let result = make_layer(dir, &spec, gateway);
            if result.is_err() {
                let _ = VpsDisk::of(dir).unmount();
            }
            result
        })?;
        tracing::info!(vps = %spec.name, id, base = idmap.base, "created");
        Ok(spec)
    }

    fn cgroup(&self, name: &Name) -> VpsCgroup {
        self.cgroups.vps(name.as_str())
    }

    /// The runtime of a VPS whose init is still the process it started.
    fn live_runtime(&self, name: &Name) -> Option<Runtime> {
        self.store
            .runtime(name)
            .filter(|r| is_same_process(r.init_pid, r.init_start))
    }

    pub fn start(&mut self, name: &str) -> Result<Runtime> {
        let name = Name::new(name)?;
        let spec = self.store.load(&name)?;
        if self.live_runtime(&name).is_some() {
            return Err(LifecycleError::Running(name.to_string()));
        }
        let span = tracing::info_span!("start", vps = %name);
        let _enter = span.enter();
        let template = self.templates.resolve(&spec.template)?;
        let cgroup = self.cgroup(&name);
        let result = self.start_in(&spec, &template, &cgroup);
        if result.is_err() {
            self.cleanup_stopped(&name, &cgroup);
        }
        result
    }

    fn start_in(&mut self, spec: &Spec, template: &Path, cgroup: &VpsCgroup) -> Result<Runtime> {
        let name = &spec.name;
        if self.ksal.is_none() {
            // Not even the cgroup hooks: no VPS runs unguarded.
            return Err(LifecycleError::Start {
                name: name.to_string(),
                why: format!(
                    "the KSAL could not be loaded, so nothing would confine it ({}); see \
                     `vzhost doctor`",
                    self.lsm_error.as_deref().unwrap_or("no reason given")
                ),
            });
        }
        cgroup.create().map_err(Self::cgroup_err(name))?;
        cgroup.apply(&spec.limits).map_err(Self::cgroup_err(name))?;
        // Registered, guarded and under its policy's network rules before
        // its first process runs; file rules follow once its root exists.
        if let Some(ksal) = &mut self.ksal {
            let id = cgroup.id().map_err(Self::cgroup_err(name))?;
            ksal.attach_guards(cgroup.v2_path(), id, spec.id, spec.ip.map(|ip| ip.addr))
                .map_err(|source| LifecycleError::Ksal {
                    name: name.to_string(),
                    source: Box::new(source),
                })?;
        }
        self.apply_policy(spec, None)?;
        let plan = LaunchPlan {
            vps_dir: self.store.dir(name).0,
            template: template.to_owned(),
            idmap: spec.idmap,
            hostname: spec.hostname.clone(),
            cgroup_procs: cgroup.procs_files(),
            init: INIT.iter().map(|s| (*s).to_owned()).collect(),
        };
        let launched = std::time::Instant::now();
        let pid = self.run_launcher(name, &plan)?;
        tracing::debug!(init_pid = pid, took = ?launched.elapsed(), "launched");
        if let Some(ip) = spec.ip {
            let net_err = |source| LifecycleError::Net {
                name: name.to_string(),
                source,
            };
            let attached = crate::net::ensure_bridge(&self.net)
                .and_then(|()| crate::net::attach_vps(&self.net, spec.id, ip, pid));
            if let Err(e) = attached {
                // The caller cleans up cgroups; the init must not outlive this.
                if let Ok(fd) = pidfd_open(pid) {
                    let _ = pidfd_send_signal(fd.as_fd(), libc::SIGKILL);
                    pidfd_wait_exit(fd.as_fd(), 5_000);
                }
                return Err(net_err(e));
            }
        }
        tracing::debug!(took = ?launched.elapsed(), "network attached");
        if let Err(e) = self.apply_policy(spec, Some(pid)) {
            if let Ok(fd) = pidfd_open(pid) {
                let _ = pidfd_send_signal(fd.as_fd(), libc::SIGKILL);
                pidfd_wait_exit(fd.as_fd(), 5_000);
            }
            return Err(e);
        }
        let runtime = Runtime {
            init_pid: pid,
            init_start: process_start_time(pid).ok_or_else(|| LifecycleError::Start {
                name: name.to_string(),
                why: "its init exited at once; see its console.log".into(),
            })?,
            started_at: now(),
        };
        self.store.set_runtime(name, Some(&runtime))?;
        tracing::info!(init_pid = pid, "started");
        Ok(runtime)
    }

    fn run_launcher(&self, name: &Name, plan: &LaunchPlan) -> Result<u32> {
        helper::launch(&self.exe, plan).map_err(|e| LifecycleError::Start {
            name: name.to_string(),
            why: e.to_string(),
        })
    }

    /// After a VPS's init is gone: kill leftovers, remove cgroups, forget it
    /// in the KSAL, clear the runtime.
    fn cleanup_stopped(&mut self, name: &Name, cgroup: &VpsCgroup) {
        if let Ok(spec) = self.store.load(name)
            && let Err(e) = crate::net::detach_vps(spec.id)
        {
            tracing::warn!(vps = %name, %e, "cannot remove its veth");
        }
        if let (Some(ksal), Ok(id), Ok(spec)) = (&mut self.ksal, cgroup.id(), self.store.load(name))
        {
            ksal.forget_vps(id, spec.id);
        }
        if let Err(e) = cgroup.remove() {
            tracing::warn!(vps = %name, %e, "cannot remove cgroups");
        }
        let _ = self.store.set_runtime(name, None);
    }

    pub fn stop(&mut self, name: &str) -> Result<()> {
        let name = Name::new(name)?;
        let spec = self.store.load(&name)?;
        let runtime = self
            .live_runtime(&name)
            .ok_or_else(|| LifecycleError::NotRunning(name.to_string()))?;
        let span = tracing::info_span!("stop", vps = %name);
        let _enter = span.enter();
        let cgroup = self.cgroup(&name);
        if let Ok(pidfd) = pidfd_open(runtime.init_pid) {
            // Re-check after opening: the pidfd now pins this very process.
            if is_same_process(runtime.init_pid, runtime.init_start) {
                let _ = pidfd_send_signal(pidfd.as_fd(), libc::SIGTERM);
                let ms = (spec.stop_timeout * 1000).min(i32::MAX as u64) as i32;
                if !pidfd_wait_exit(pidfd.as_fd(), ms) {
                    tracing::warn!(timeout = spec.stop_timeout, "init ignored SIGTERM; killing");
                    let _ = pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
                    pidfd_wait_exit(pidfd.as_fd(), 10_000);
                }
            }
        }
        self.cleanup_stopped(&name, &cgroup);
        tracing::info!("stopped");
        Ok(())
    }

    pub fn restart(&mut self, name: &str) -> Result<Runtime> {
        let vps = Name::new(name)?;
        if self.live_runtime(&vps).is_some() {
            self.stop(name)?;
        }
        self.start(name)
    }

    pub fn destroy(&mut self, name: &str, force: bool) -> Result<()> {
        let name = Name::new(name)?;
        self.store.load(&name)?;
        if self.live_runtime(&name).is_some() {
            if !force {
                return Err(LifecycleError::RunningNoForce(name.to_string()));
            }
            self.stop(name.as_str())?;
        }
        let cgroup = self.cgroup(&name);
        self.cleanup_stopped(&name, &cgroup);
        VpsDisk::of(&self.store.dir(&name)).unmount().map_err(|e| {
            Self::io(&name, "unmount its disk")(std::io::Error::other(e.to_string()))
        })?;
        self.store.remove(&name)?;
        tracing::info!(vps = %name, "destroyed");
        Ok(())
    }

    /// Change limits; applied at once to a running VPS, and persisted.
    pub fn set(&mut self, name: &str, limits: &Limits) -> Result<Spec> {
        let name = Name::new(name)?;
        let mut spec = self.store.load(&name)?;
        let mut merged = spec.limits.clone();
        merged.merge(limits);
        merged.validate()?;
        if self.live_runtime(&name).is_some() {
            self.cgroup(&name)
                .apply(&merged)
                .map_err(Self::cgroup_err(&name))?;
        }
        if let Some(bytes) = limits.disk {
            let disk = VpsDisk::of(&self.store.dir(&name));
            let as_io = |e: crate::rootfs::disk::DiskError| std::io::Error::other(e.to_string());
            match spec.disk {
                Some(backend) => disk
                    .resize(backend, bytes)
                    .map_err(|e| Self::io(&name, "change its disk limit")(as_io(e)))?,
                None => {
                    let project = project_id(spec.id);
                    if !has_project_quota(&disk.disk) {
                        return Err(LifecycleError::Io {
                            name: name.to_string(),
                            what: "add a disk limit".into(),
                            source: std::io::Error::other(
                                "it was created without --disk and this filesystem has no \
                                 project quotas; recreate it with --disk",
                            ),
                        });
                    }
                    disk.add_project_limit(project, bytes)
                        .map_err(|e| Self::io(&name, "add a disk limit")(as_io(e)))?;
                    spec.disk = Some(crate::model::DiskBackend::ProjectQuota { project });
                }
            }
        }
        spec.limits = merged;
        self.store.save(&spec)?;
        Ok(spec)
    }

    pub fn list(&self) -> Result<Vec<VpsStatus>> {
        Ok(self
            .store
            .list()?
            .into_iter()
            .map(|spec| {
                let runtime = self.live_runtime(&spec.name);
                let policy = self.policy_of(&spec).ok();
                let nproc = if runtime.is_some() {
                    self.cgroup(&spec.name).usage().nproc
                } else {
                    0
                };
                VpsStatus {
                    status: if runtime.is_some() {
                        Status::Running
                    } else {
                        Status::Stopped
                    },
                    init_pid: runtime.as_ref().map(|r| r.init_pid),
                    network: runtime.as_ref().and_then(|_| self.net_stats(spec.id)),
                    degraded: runtime.is_some()
                        && policy
                            .as_ref()
                            .is_some_and(|p| self.missing_lsm(p).is_some()),
                    policy: policy.map(|p| p.name),
                    name: spec.name.to_string(),
                    ip: spec.ip.map(|ip| ip.to_string()),
                    hostname: spec.hostname,
                    nproc,
                    template: spec.template,
                    limits: spec.limits,
                }
            })
            .collect())
    }

    /// Accounting of one VPS, or of all with `name` None.
    pub fn stat(&mut self, name: Option<&str>) -> Result<Vec<VpsStat>> {
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
                    let peak = self
                        .process_peaks
                        .entry(spec.id)
                        .or_insert((r.started_at, 0));
                    if peak.0 != r.started_at {
                        *peak = (r.started_at, 0);
                    }
                    peak.1 = peak.1.max(a.processes.maxheld);
                    a.processes.maxheld = peak.1;
                    a
                });
                VpsStat {
                    network: runtime.as_ref().and_then(|_| self.net_stats(spec.id)),
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

    fn net_stats(&self, vps_id: u32) -> Option<NetStats> {
        let c = self.ksal.as_ref()?.net_counters(vps_id).ok()?;
        Some(NetStats {
            rx_bytes: c.rx_bytes,
            rx_packets: c.rx_packets,
            tx_bytes: c.tx_bytes,
            tx_packets: c.tx_packets,
            spoofed_dropped: c.spoofed_dropped,
        })
    }

    /// Events the KSAL could not deliver (0 without a KSAL).
    pub fn events_dropped(&self) -> u64 {
        self.ksal
            .as_ref()
            .and_then(|k| k.events_dropped().ok())
            .unwrap_or(0)
    }

    /// How to run `argv` inside a running VPS.
    pub fn attach_plan(&self, name: &str, argv: Vec<String>, tty: bool) -> Result<AttachPlan> {
        let name = Name::new(name)?;
        self.store.load(&name)?;
        let runtime = self
            .live_runtime(&name)
            .ok_or_else(|| LifecycleError::NotRunning(name.to_string()))?;
        Ok(AttachPlan {
            init_pid: runtime.init_pid,
            init_start: runtime.init_start,
            cgroup_procs: self.cgroup(&name).procs_files(),
            argv,
            tty,
        })
    }

    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Set `user`'s password in the VPS's own /etc/shadow (SHA-512 crypt).
    /// A running VPS is changed from inside; a stopped one in its layer.
    pub fn passwd(&mut self, name: &str, user: &str, password: &str) -> Result<()> {
        let vps = Name::new(name)?;
        let spec = self.store.load(&vps)?;
        let hash = sha_crypt::sha512_simple(password, &sha_crypt::Sha512Params::default())
            .map_err(|e| LifecycleError::Io {
                name: name.into(),
                what: "hash the password".into(),
                source: std::io::Error::other(format!("{e:?}")),
            })?;
        let dir = self.store.dir(&vps);
        let template = self.templates.resolve(&spec.template)?;
        let read_layered = |rel: &str| -> Result<String> {
            let upper = dir.upper().join(rel);
            let path = if upper.exists() {
                upper
            } else {
                template.join(rel)
            };
            fs::read_to_string(&path).map_err(Self::io(&vps, format!("read {}", path.display())))
        };
        // The running VPS's own view is the truth while it runs.
        let running = self.live_runtime(&vps);
        let (passwd, shadow) = match &running {
            Some(r) => {
                let root = PathBuf::from(format!("/proc/{}/root", r.init_pid));
                let read = |rel: &str| {
                    fs::read_to_string(root.join(rel))
                        .map_err(Self::io(&vps, format!("read /{rel}")))
                };
                (read("etc/passwd")?, read("etc/shadow").unwrap_or_default())
            }
            None => (
                read_layered("etc/passwd")?,
                read_layered("etc/shadow").unwrap_or_default(),
            ),
        };
        if !passwd.lines().any(|l| l.split(':').next() == Some(user)) {
            return Err(LifecycleError::NoUser {
                name: name.into(),
                user: user.into(),
            });
        }
        let updated = set_shadow_hash(&shadow, user, &hash);
        match running {
            Some(_) => {
                let plan = self.attach_plan(
                    name,
                    vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        "umask 077 && cat > /etc/shadow.vzhost && mv /etc/shadow.vzhost /etc/shadow"
                            .into(),
                    ],
                    false,
                )?;
                let write_err = |source| LifecycleError::Io {
                    name: name.into(),
                    what: "write /etc/shadow".into(),
                    source,
                };
                let ran = helper::run_in_vps(&self.exe, &plan, updated.as_bytes(), PASSWD_TIMEOUT)
                    .map_err(|e| write_err(std::io::Error::other(e)))?;
                if ran.code != 0 {
                    return Err(write_err(std::io::Error::other(ran.stderr)));
                }
            }
            None => {
                let etc = dir.upper().join("etc");
                ensure_owned_dir(&etc, spec.idmap.base).map_err(Self::io(&vps, "create etc"))?;
                write_owned(
                    &etc.join("shadow"),
                    updated.as_bytes(),
                    0o600,
                    spec.idmap.base,
                )
                .map_err(Self::io(&vps, "write /etc/shadow"))?;
            }
        }
        tracing::info!(vps = name, user, "password set");
        Ok(())
    }

    /// After a daemon restart: keep running VPSs (re-registering them with
    /// the KSAL) and clean up after those whose init died meanwhile.
    pub fn adopt(&mut self) -> Result<Vec<String>> {
        let mut adopted = Vec::new();
        let mut running = Vec::new();
        for spec in self.store.list()? {
            if spec.disk == Some(crate::model::DiskBackend::Image)
                && let Err(e) = VpsDisk::of(&self.store.dir(&spec.name)).mount_image()
            {
                tracing::error!(vps = %spec.name, %e, "cannot mount its disk image");
            }
            let cgroup = self.cgroup(&spec.name);
            if let Some(runtime) = self.live_runtime(&spec.name) {
                if let (Some(ksal), Ok(id)) = (&mut self.ksal, cgroup.id())
                    && let Err(e) =
                        ksal.attach_guards(cgroup.v2_path(), id, spec.id, spec.ip.map(|ip| ip.addr))
                {
                    tracing::error!(vps = %spec.name, %e, "cannot re-attach its network guards");
                }
                if let Err(e) = self.apply_policy(&spec, Some(runtime.init_pid)) {
                    tracing::error!(vps = %spec.name, "ENFORCEMENT: cannot apply its policy: {e}");
                }
                tracing::info!(vps = %spec.name, "adopted running VPS");
                adopted.push(spec.name.to_string());
                if let Ok(id) = cgroup.id() {
                    running.push((id, spec.id));
                }
            } else if self.store.runtime(&spec.name).is_some() {
                tracing::warn!(vps = %spec.name, "init died while the daemon was away; cleaning up");
                self.cleanup_stopped(&spec.name, &cgroup);
            }
        }
        // Pins and map entries of VPSs that are gone (destroyed or
        // stopped while no daemon ran) go too.
        if let Some(ksal) = &mut self.ksal {
            ksal.prune(&running);
        }
        Ok(adopted)
    }

    /// On a clean daemon exit: remove this daemon's v1 directories if no
    /// VPS runs in them (running VPSs keep theirs).
    pub fn shutdown(&self) {
        self.cgroups.remove_v1_parents();
    }
}

/// VPS names and rule names for the ids in KSAL events.
pub struct EventNames {
    /// By VPS id: its name and the policy it runs under.
    vps: std::collections::HashMap<u32, (String, Option<String>)>,
    rules: std::collections::HashMap<u32, String>,
}

impl EventNames {
    pub fn vps(&self, vps_id: u32) -> Option<&str> {
        self.vps.get(&vps_id).map(|(n, _)| n.as_str())
    }

    /// The rule `rule_id` of VPS `vps_id`'s policy: a rule the host put
    /// in the maps, or a guard section of the policy.
    pub fn rule(&self, vps_id: u32, rule_id: u32) -> String {
        self.rules
            .get(&rule_id)
            .cloned()
            .or_else(|| {
                let policy = self.vps.get(&vps_id)?.1.as_deref()?;
                policy::guard_rule_name(policy, rule_id)
            })
            .unwrap_or_else(|| format!("rule#{rule_id}"))
    }
}

/// A range must leave host root unmapped and hold the template's ids.
fn validate_idmap(m: &IdMap) -> std::result::Result<(), SpecError> {
    let bad = |field, why: &str| SpecError::Field {
        field,
        value: if field == "uid-base" { m.base } else { m.count }.to_string(),
        why: why.into(),
    };
    if m.base == 0 {
        return Err(bad(
            "uid-base",
            "must not be 0: VPS root would be host root",
        ));
    }
    if m.count < 65_536 {
        return Err(bad(
            "uid-count",
            "must be at least 65536 (templates use ids up to 65534)",
        ));
    }
    if m.base.checked_add(m.count).is_none() {
        return Err(bad("uid-base", "the range runs past the largest id"));
    }
    Ok(())
}

/// The first id range that overlaps none in use.
fn allocate_idmap(used: impl Iterator<Item = IdMap>) -> Result<IdMap> {
    let used: Vec<IdMap> = used.collect();
    (0..u32::MAX / crate::model::IDMAP_SIZE)
        .map(|slot| IdMap {
            base: crate::model::IDMAP_FIRST + slot * crate::model::IDMAP_SIZE,
            count: crate::model::IDMAP_SIZE,
        })
        .take_while(|m| m.base.checked_add(m.count).is_some())
        .find(|m| !used.iter().any(|u| u.overlaps(m)))
        .ok_or(LifecycleError::NoIdRange)
}

fn chown(path: &Path, id: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(id), Some(id))
}

fn ensure_owned_dir(path: &Path, id: u32) -> std::io::Result<()> {
    if !path.exists() {
        fs::create_dir(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
        chown(path, id)?;
    }
    Ok(())
}

fn write_owned(path: &Path, bytes: &[u8], mode: u32, id: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("vzhost-tmp");
    fs::write(&tmp, bytes)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    chown(&tmp, id)?;
    fs::rename(&tmp, path)
}

/// Project id of a VPS's disk quota.
fn project_id(vps_id: u32) -> u32 {
    0x10000 + vps_id
}

/// The VPS's own layer: its disk (limited if asked), upper and work
/// directories, and an upper that starts with its own root directory,
/// hostname and hosts file, owned by its root.
fn make_layer(
    dir: &VpsDir,
    spec: &Spec,
    gateway: std::net::Ipv4Addr,
) -> std::result::Result<(), StoreError> {
    let wrap = |what: &'static str, path: PathBuf| {
        move |source| StoreError::Io {
            action: what,
            path: path.display().to_string(),
            source,
        }
    };
    let disk = VpsDisk::of(dir);
    match (spec.disk, spec.limits.disk) {
        (Some(backend), Some(bytes)) => {
            disk.create(backend, bytes, spec.idmap.base).map_err(|e| {
                wrap("make the disk", disk.disk.clone())(std::io::Error::other(e.to_string()))
            })?
        }
        _ => fs::create_dir(&disk.disk).map_err(wrap("create", disk.disk.clone()))?,
    }
    for d in [dir.upper(), dir.work()] {
        fs::create_dir(&d).map_err(wrap("create", d.clone()))?;
    }
    let base = spec.idmap.base;
    let upper = dir.upper();
    fs::set_permissions(&upper, fs::Permissions::from_mode(0o755))
        .map_err(wrap("chmod", upper.clone()))?;
    chown(&upper, base).map_err(wrap("chown", upper.clone()))?;
    let etc = upper.join("etc");
    ensure_owned_dir(&etc, base).map_err(wrap("create", etc.clone()))?;
    let host = &spec.hostname;
    write_owned(
        &etc.join("hostname"),
        format!("{host}\n").as_bytes(),
        0o644,
        base,
    )
    .map_err(wrap("write", etc.join("hostname")))?;
    let own = spec
        .ip
        .map_or_else(|| "127.0.1.1".to_owned(), |ip| ip.addr.to_string());
    let hosts = format!("127.0.0.1 localhost\n::1 localhost\n{own} {host}\n");
    write_owned(&etc.join("hosts"), hosts.as_bytes(), 0o644, base)
        .map_err(wrap("write", etc.join("hosts")))?;
    // No resolver runs on the host by default; the gateway is where one
    // (or NAT to the administrator's) would answer.
    let resolv = format!("nameserver {gateway}\n");
    write_owned(&etc.join("resolv.conf"), resolv.as_bytes(), 0o644, base)
        .map_err(wrap("write", etc.join("resolv.conf")))
}

/// `shadow` with `user`'s hash set (the line added if missing).
fn set_shadow_hash(shadow: &str, user: &str, hash: &str) -> String {
    let days = now() / 86_400;
    let mut found = false;
    let mut out: Vec<String> = shadow
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(':').collect();
            if fields.first() == Some(&user) && fields.len() >= 3 {
                found = true;
                fields[1] = hash;
                let d = days.to_string();
                let mut owned: Vec<String> = fields.iter().map(|s| (*s).to_owned()).collect();
                owned[2] = d;
                owned.join(":")
            } else {
                line.to_owned()
            }
        })
        .collect();
    if !found {
        out.push(format!("{user}:{hash}:{days}:0:99999:7:::"));
    }
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idmaps_never_overlap() {
        let first = allocate_idmap(std::iter::empty()).unwrap();
        assert_eq!(first.base, crate::model::IDMAP_FIRST);
        let second = allocate_idmap([first].into_iter()).unwrap();
        assert!(!second.overlaps(&first));
        let odd = IdMap {
            base: first.base + 10,
            count: 5,
        };
        let third = allocate_idmap([odd].into_iter()).unwrap();
        assert!(!third.overlaps(&odd));
    }

    #[test]
    fn idmap_bounds() {
        assert!(
            validate_idmap(&IdMap {
                base: 0,
                count: 65536
            })
            .is_err()
        );
        assert!(
            validate_idmap(&IdMap {
                base: 200_000,
                count: 100
            })
            .is_err()
        );
        assert!(
            validate_idmap(&IdMap {
                base: u32::MAX - 10,
                count: 65536
            })
            .is_err()
        );
        assert!(
            validate_idmap(&IdMap {
                base: 200_000,
                count: 65536
            })
            .is_ok()
        );
    }

    #[test]
    fn shadow_lines_are_replaced_or_added() {
        let s = "root:*:1:0:99999:7:::\nbob:!:1:0:99999:7:::\n";
        let out = set_shadow_hash(s, "root", "$6$x$y");
        let root = out.lines().next().unwrap();
        assert!(root.starts_with("root:$6$x$y:"), "{root}");
        assert!(root.ends_with(":0:99999:7:::"), "{root}");
        assert!(out.contains("bob:!:1:"));
        let added = set_shadow_hash("", "alice", "$6$a$b");
        assert!(added.starts_with("alice:$6$a$b:"));
    }

    #[test]
    fn sha512_hashes_verify() {
        let h = sha_crypt::sha512_simple("s3cret", &sha_crypt::Sha512Params::default()).unwrap();
        assert!(h.starts_with("$6$"));
        assert!(sha_crypt::sha512_check("s3cret", &h).is_ok());
        assert!(sha_crypt::sha512_check("wrong", &h).is_err());
    }
}
