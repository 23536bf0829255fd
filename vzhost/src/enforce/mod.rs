//! Enforcement: which policy each VPS runs under, what that policy asks of
//! the KSAL for it, and keeping the KSAL's maps in step as VPSs start and
//! stop and as policies change. Owned by the host, behind one short lock:
//! every operation here is a few map updates, never VPS-controlled work.
mod names;
mod root;
mod rules;

use std::collections::HashMap;

use crate::{
    ksal::{Ksal, KsalError},
    model::{Name, NetStats, Spec},
    policy::{
        Policy,
        watch::{FileStatus, PolicyDir},
    },
};

pub use names::EventNames;
pub use root::VpsRoot;
pub use rules::{KernelRules, Stage, kernel_rules};

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error(
        "VPS {name} runs under policy {policy:?}, which is not in force; restore it, or recreate the VPS with another --policy"
    )]
    NoPolicy { name: String, policy: String },
    #[error(
        "VPS {name}: its policy {policy} needs the LSM hooks {hooks} and this kernel cannot run them ({why}); run it on a kernel with BPF LSM enabled, or set `allow_degraded: true` in the policy to start it with the cgroup hooks only"
    )]
    MissingLsm {
        name: String,
        policy: String,
        hooks: String,
        why: String,
    },
    #[error(
        "VPS {name}: the KSAL could not be loaded, so nothing would confine it ({why}); see `vzhost doctor`"
    )]
    NoKsal { name: String, why: String },
    #[error(
        "VPS {name}: its policy {policy} asks for deny_host, and the host's addresses cannot be listed ({source})"
    )]
    HostAddresses {
        name: String,
        policy: String,
        source: crate::net::LinkError,
    },
    #[error("VPS {name}: {source}")]
    Veth {
        name: String,
        source: crate::net::LinkError,
    },
    #[error("VPS {name}: KSAL: {source}")]
    Ksal {
        name: String,
        source: Box<KsalError>,
    },
}

impl EnforceError {
    pub fn kind(&self) -> crate::model::ErrorKind {
        use crate::model::ErrorKind;
        match self {
            Self::NoPolicy { .. } => ErrorKind::NotFound,
            Self::MissingLsm { .. }
            | Self::NoKsal { .. }
            | Self::Ksal { .. }
            | Self::HostAddresses { .. }
            | Self::Veth { .. } => ErrorKind::Kernel,
        }
    }
}

pub type Result<T> = std::result::Result<T, EnforceError>;

/// The KSAL, the policies in force, and what the host put in the maps.
pub struct Enforcement {
    ksal: Option<Ksal>,
    /// Why the LSM hooks are not loaded, if they are not.
    lsm_error: Option<String>,
    policies: PolicyDir,
    /// Names of the rule ids ever put in the maps, for events and metrics.
    rule_names: HashMap<u32, String>,
    /// Each running VPS's root as captured at launch, by VPS id: where its
    /// file rules are resolved, at start and at every reload.
    roots: HashMap<u32, VpsRoot>,
}

impl Enforcement {
    pub fn new(ksal: Option<Ksal>, lsm_error: Option<String>, policies: PolicyDir) -> Self {
        Self {
            ksal,
            lsm_error,
            policies,
            rule_names: HashMap::new(),
            roots: HashMap::new(),
        }
    }

    /// The policy VPS `spec` runs under.
    pub fn policy_of(&self, spec: &Spec) -> Result<Policy> {
        self.policies
            .set()
            .for_vps(spec.policy.as_deref(), spec.name.as_str(), &spec.labels)
            .cloned()
            .ok_or_else(|| EnforceError::NoPolicy {
                name: spec.name.to_string(),
                policy: spec.policy.clone().unwrap_or_default(),
            })
    }

    /// The policy in force under `name`.
    pub fn policy(&self, name: &str) -> Option<Policy> {
        self.policies.set().policies.get(name).cloned()
    }

    pub fn policy_files(&self) -> Vec<FileStatus> {
        self.policies.status()
    }

    pub fn policy_reload_errors(&self) -> u64 {
        self.policies.reload_errors
    }

    /// The LSM hooks `policy` needs that this kernel cannot run, and why.
    fn missing_lsm(&self, policy: &Policy) -> Option<(Vec<&'static str>, &str)> {
        let hooks = policy.lsm_hooks();
        let why = self.lsm_error.as_deref().filter(|_| !hooks.is_empty())?;
        Some((hooks, why))
    }

    /// Whether `policy` runs degraded here; an error when it needs LSM
    /// hooks this kernel cannot run and does not allow that.
    pub fn degraded(&self, name: &Name, policy: &Policy) -> Result<bool> {
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
        Err(EnforceError::MissingLsm {
            name: name.to_string(),
            policy: policy.name.clone(),
            hooks: hooks.join(", "),
            why: why.to_owned(),
        })
    }

    /// Whether a running VPS with `spec` runs without its LSM rules, or
    /// with a network whose veth is not checked.
    pub fn is_degraded(&self, spec: &Spec) -> bool {
        let unchecked_veth =
            spec.ip.is_some() && self.ksal.as_ref().is_some_and(|k| k.veth_error().is_some());
        unchecked_veth
            || self
                .policy_of(spec)
                .is_ok_and(|p| self.missing_lsm(&p).is_some())
    }

    /// The KSAL, or why no VPS may start.
    fn ksal(&mut self, name: &Name) -> Result<&mut Ksal> {
        let why = self.lsm_error.clone();
        self.ksal.as_mut().ok_or_else(|| EnforceError::NoKsal {
            name: name.to_string(),
            why: why.unwrap_or_else(|| "no reason given".into()),
        })
    }

    /// Attach the network guards to a VPS's cgroup (before anything of it
    /// runs) and register it under its policy as far as `Stage::Building`
    /// allows.
    pub fn admit(
        &mut self,
        spec: &Spec,
        cgroup: (&std::path::Path, u64),
        ipv4: Option<std::net::Ipv4Addr>,
    ) -> Result<bool> {
        let ksal_err = ksal_error(&spec.name);
        self.ksal(&spec.name)?
            .attach_guards(cgroup.0, cgroup.1, spec.id, (ipv4, spec.ip6))
            .map_err(ksal_err)?;
        self.apply(spec, cgroup.1, Stage::Building, None)
    }

    /// Put VPS `spec` (cgroup `cgroup_id`) under its policy as far as
    /// `stage` allows. File rules resolve inside its root: `root` when
    /// given (kept for later reloads), else the one kept before.
    /// Returns whether it runs degraded.
    pub fn apply(
        &mut self,
        spec: &Spec,
        cgroup_id: u64,
        stage: Stage,
        root: Option<VpsRoot>,
    ) -> Result<bool> {
        let policy = self.policy_of(spec)?;
        let degraded = self.degraded(&spec.name, &policy)?;
        let lsm = self.lsm_error.is_none();
        let host = if policy.network.deny_host {
            crate::net::host_networks().map_err(|source| EnforceError::HostAddresses {
                name: spec.name.to_string(),
                policy: policy.name.clone(),
                source,
            })?
        } else {
            Vec::new()
        };
        if let Some(root) = root {
            self.roots.insert(spec.id, root);
        }
        let root = self.roots.get(&spec.id);
        let resolved = kernel_rules(&policy, spec.id, stage, lsm, &host, |path| match root {
            Some(root) => root.stat(path),
            None => Err(std::io::Error::other("no root was captured for the VPS")),
        });
        for (rule, e) in &resolved.unresolved {
            tracing::warn!(vps = %spec.name, %rule, "cannot resolve the rule's path: {e}");
        }
        self.rule_names.extend(resolved.names);
        let ksal_err = ksal_error(&spec.name);
        let ksal = self.ksal(&spec.name)?;
        ksal.register_entry(cgroup_id, resolved.entry)
            .and_then(|()| ksal.sync_rules(spec.id, resolved.rules))
            .map_err(ksal_err)?;
        tracing::info!(vps = %spec.name, policy = %policy.name, mode = %policy.mode, ?stage, degraded, "policy applied");
        Ok(degraded)
    }

    /// Put the tc program on VPS `spec`'s host veth (cgroup `cgroup_id`):
    /// from here every frame it sends is checked. Where the kernel would
    /// not load the program, the VPS's policy decides, as for LSM hooks:
    /// it starts only if it allows degraded mode.
    pub fn attach_veth(
        &mut self,
        spec: &Spec,
        cgroup_id: u64,
        net: &crate::net::NetConfig,
    ) -> Result<()> {
        let Some(ip) = spec.ip else {
            return Ok(());
        };
        let policy = self.policy_of(spec)?;
        let ksal_err = ksal_error(&spec.name);
        let ksal = self.ksal(&spec.name)?;
        if let Some(why) = ksal.veth_error()
            && policy.allow_degraded
        {
            tracing::warn!(vps = %spec.name, policy = %policy.name, "DEGRADED: what it sends on its veth is not checked: {why}");
            return Ok(());
        }
        let ifindex =
            crate::net::veth_index(net, spec.id).map_err(|source| EnforceError::Veth {
                name: spec.name.to_string(),
                source,
            })?;
        let entry = ksal_common::VethEntry {
            cgroup_id,
            vps_id: spec.id,
            ipv4_be: u32::from_ne_bytes(ip.addr.octets()),
            mac: crate::net::vps_mac(spec.id),
            _pad: [0; 2],
            ipv6: spec.ip6.map_or([0; 16], |ip| ip.octets()),
        };
        ksal.attach_veth(&net.host_veth(spec.id), ifindex, entry)
            .map_err(ksal_err)
    }

    /// Forget a VPS that stopped: its entry, address, rules and root.
    pub fn forget(&mut self, cgroup_id: u64, vps_id: u32) {
        self.roots.remove(&vps_id);
        if let Some(ksal) = &mut self.ksal {
            ksal.forget_vps(cgroup_id, vps_id);
        }
    }

    /// A destroyed VPS's last traces in the KSAL: its counters.
    pub fn forget_destroyed(&mut self, vps_id: u32) {
        if let Some(ksal) = &mut self.ksal {
            ksal.forget_counters(vps_id);
        }
    }

    /// After a daemon restart: attach this KSAL's guards to a VPS that kept
    /// running (replacing the old daemon's) and put it under its policy,
    /// with its root as [`VpsRoot::capture`] finds it now.
    pub fn readopt(
        &mut self,
        spec: &Spec,
        cgroup: (&std::path::Path, u64),
        root: Option<VpsRoot>,
        net: &crate::net::NetConfig,
    ) -> Result<bool> {
        if let Some(ksal) = &mut self.ksal {
            ksal.attach_guards(
                cgroup.0,
                cgroup.1,
                spec.id,
                (spec.ip.map(|ip| ip.addr), spec.ip6),
            )
            .map_err(ksal_error(&spec.name))?;
        }
        let degraded = self.apply(spec, cgroup.1, Stage::Built, root)?;
        self.attach_veth(spec, cgroup.1, net)?;
        Ok(degraded)
    }

    /// Drop pins and map entries of VPSs not among `running` (cgroup id,
    /// VPS id): destroyed or stopped while no daemon ran.
    pub fn prune(&mut self, running: &[(u64, u32)]) {
        if let Some(ksal) = &mut self.ksal {
            ksal.prune(running);
        }
    }

    /// Read the policies directory again; returns whether anything changed.
    /// The caller re-applies them to the running VPSs.
    pub fn reload(&mut self) -> bool {
        self.policies.reload()
    }

    /// A VPS's traffic as the KSAL counted it.
    pub fn net_stats(&self, vps_id: u32) -> Option<NetStats> {
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

    /// What the ids in events stand for, given every VPS's spec.
    pub fn event_names(&self, specs: &[Spec]) -> EventNames {
        EventNames {
            vps: specs
                .iter()
                .map(|spec| {
                    let policy = self.policy_of(spec).ok().map(|p| p.name);
                    (spec.id, (spec.name.to_string(), policy))
                })
                .collect(),
            rules: self.rule_names.clone(),
        }
    }
}

fn ksal_error(name: &Name) -> impl FnOnce(KsalError) -> EnforceError {
    let name = name.to_string();
    move |source| EnforceError::Ksal {
        name,
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enforcement(dir: &std::path::Path, lsm_error: Option<&str>) -> Enforcement {
        let mut policies = PolicyDir::new(dir);
        policies.reload();
        Enforcement::new(None, lsm_error.map(str::to_owned), policies)
    }

    fn spec(name: &str, policy: Option<&str>) -> Spec {
        Spec {
            name: Name::new(name).expect("valid"),
            template: crate::model::TemplateName::new("busybox").expect("valid"),
            hostname: name.into(),
            limits: Default::default(),
            idmap: crate::model::IdMap {
                base: 1_000_000,
                count: 65_536,
            },
            labels: Default::default(),
            stop_timeout: 10,
            id: 1,
            disk: None,
            ip: None,
            ip6: None,
            policy: policy.map(str::to_owned),
        }
    }

    fn write(dir: &std::path::Path, file: &str, text: &str) {
        std::fs::write(dir.join(file), text).expect("write policy");
    }

    #[test]
    fn a_vps_naming_a_policy_not_in_force_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = enforcement(dir.path(), None);
        let err = e.policy_of(&spec("a", Some("gone"))).unwrap_err();
        assert!(matches!(&err, EnforceError::NoPolicy { policy, .. } if policy == "gone"));
        assert!(err.to_string().contains("--policy"), "{err}");
        assert_eq!(
            e.policy_of(&spec("a", None)).expect("default").name,
            "default"
        );
    }

    #[test]
    fn lsm_needs_fail_closed_unless_the_policy_allows_degraded() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "closed.yaml", "kernel:\n  bpf: deny\n");
        write(
            dir.path(),
            "open.yaml",
            "allow_degraded: true\nkernel:\n  bpf: deny\n",
        );
        write(
            dir.path(),
            "cgroup.yaml",
            "devices:\n  allow: [\"c 1:3 rwm\"]\n",
        );
        let e = enforcement(dir.path(), Some("BPF_PROG_LOAD: EPERM"));
        let name = Name::new("a").expect("valid");
        let closed = e.policy("closed").expect("in force");
        let err = e.degraded(&name, &closed).unwrap_err().to_string();
        assert!(err.contains("bpf") && err.contains("EPERM"), "{err}");
        assert!(err.contains("allow_degraded"), "{err}");
        assert!(
            e.degraded(&name, &e.policy("open").expect("in force"))
                .expect("allowed")
        );
        let cgroup_only = e.policy("cgroup").expect("in force");
        assert!(!e.degraded(&name, &cgroup_only).expect("needs no LSM"));
        assert!(e.is_degraded(&spec("a", Some("open"))));
        assert!(!e.is_degraded(&spec("a", Some("cgroup"))));
    }

    #[test]
    fn with_lsm_nothing_is_degraded() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "closed.yaml", "kernel:\n  bpf: deny\n");
        let e = enforcement(dir.path(), None);
        let name = Name::new("a").expect("valid");
        assert!(
            !e.degraded(&name, &e.policy("closed").expect("in force"))
                .expect("ok")
        );
    }

    #[test]
    fn without_a_ksal_nothing_is_admitted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = enforcement(dir.path(), Some("no BPF at all"));
        let err = e
            .admit(
                &spec("a", None),
                (std::path::Path::new("/nonexistent"), 1),
                None,
            )
            .unwrap_err();
        assert!(matches!(err, EnforceError::NoKsal { .. }), "{err}");
        assert!(err.to_string().contains("no BPF at all"));
    }

    #[test]
    fn event_names_name_each_vps_and_its_policy() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "strict.yaml", "kernel:\n  bpf: deny\n");
        let e = enforcement(dir.path(), None);
        let mut s = spec("web", Some("strict"));
        s.id = 4;
        let names = e.event_names(&[s]);
        assert_eq!(names.vps(4), Some("web"));
        assert_eq!(
            names.rule(4, ksal_common::guard_rule::BPF),
            "strict:kernel.bpf"
        );
    }
}
