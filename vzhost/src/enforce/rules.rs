//! What a policy asks of the KSAL for one VPS: its registration entry
//! (mode, guard bits, denied capabilities) and its rules (files, egress,
//! mount types, devices, sysctls). A pure function of the policy, how far
//! the VPS's start has come and whether the kernel runs the LSM hooks; the
//! one input from the outside world, resolving a path inside the VPS, is
//! passed in.
use std::net::Ipv4Addr;

use ksal_common::{EGRESS_ALLOW, FileRule, FileRuleKey, VpsEntry, access, guard, guard_rule};

use crate::{
    ksal::{EgressDeny, VpsRules},
    policy::{self, Policy},
};

/// How far a VPS's start has come, which decides what of its policy can be
/// in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Its cgroup exists but its root is being built: the launcher mounts
    /// and uses capabilities as VPS root, so only the network rules hold.
    Building,
    /// Its root is built and its init is held (or running): everything.
    Built,
}

/// A VPS's entry and rules, with the names its rule ids are reported under.
#[derive(Debug)]
pub struct KernelRules {
    pub entry: VpsEntry,
    pub rules: VpsRules,
    /// Rule id -> `POLICY:SECTION[i]`, for naming events.
    pub names: Vec<(u32, String)>,
    /// File rules whose path could not be resolved for a reason other than
    /// the file not existing (which holds nothing yet).
    pub unresolved: Vec<(String, std::io::Error)>,
}

/// The kernel rules of `policy` for VPS `vps_id` at `stage`, with `lsm`
/// telling whether the kernel runs the LSM hooks, `host` the networks of
/// the host's own addresses (`network.deny_host`), and `resolve` giving
/// (st_dev, st_ino) of a path inside the VPS's root.
pub fn kernel_rules(
    policy: &Policy,
    vps_id: u32,
    stage: Stage,
    lsm: bool,
    host: &[(Ipv4Addr, u8)],
    mut resolve: impl FnMut(&str) -> std::io::Result<(u64, u64)>,
) -> KernelRules {
    let mut out = KernelRules {
        entry: VpsEntry {
            vps_id,
            mode: policy.mode.kernel(),
            guards: 0,
            _pad: 0,
            caps_denied: 0,
            families_allowed: 0,
        },
        rules: VpsRules::default(),
        names: Vec::new(),
        unresolved: Vec::new(),
    };
    let names = policy.rule_names();
    let (file_names, net_names) = names.split_at(policy.files.deny.len());
    for (rule, name) in policy.network.deny_egress.iter().zip(net_names) {
        let rule_id = policy::rule_id(name);
        out.names.push((rule_id, name.clone()));
        out.rules.egress.push(EgressDeny {
            net: rule.cidr.addr,
            prefix: rule.cidr.prefix,
            port: u32::from(rule.port),
            rule_id,
        });
    }
    if policy.network.deny_host {
        let user = out.rules.egress.clone();
        out.rules.egress.extend(host_rules(policy, host, &user));
    }
    if stage == Stage::Building {
        return out;
    }
    // The cgroup hooks hold with or without LSM.
    if let Some(d) = &policy.devices {
        out.rules.devices = d.allow.iter().map(|r| (r.key(), r.access)).collect();
    }
    if let Some(s) = &policy.sysctl {
        out.rules.sysctls = s.allow_write.iter().map(policy::SysctlName::key).collect();
    }
    if !lsm {
        out.entry.guards = policy.guards() & (guard::DEVICES | guard::SYSCTL);
        return out;
    }
    out.entry.guards = policy.guards();
    out.entry.caps_denied = policy.caps_denied();
    out.entry.families_allowed = policy
        .network
        .socket_families
        .as_deref()
        .map_or(0, policy::family_mask);
    out.rules.mount_types = policy
        .mounts
        .allow_types
        .iter()
        .flatten()
        .map(policy::FsType::key)
        .collect();
    for (rule, name) in policy.files.deny.iter().zip(file_names) {
        let rule_id = policy::rule_id(name);
        out.names.push((rule_id, name.clone()));
        let mut access = rule.access_bits();
        // A file under a write rule keeps its name, and so does every
        // directory on its way: renaming one swaps the file out too.
        let held = if access & access::WRITE != 0 {
            access |= access::NAME;
            std::path::Path::new(rule.path.as_str())
                .ancestors()
                .collect()
        } else {
            vec![std::path::Path::new(rule.path.as_str())]
        };
        for (i, path) in held.iter().enumerate() {
            let Some(path) = path.to_str().filter(|p| !matches!(*p, "/" | "")) else {
                continue;
            };
            let access = if i == 0 { access } else { access::NAME };
            match resolve(path) {
                Ok((dev, ino)) => add_file(
                    &mut out.rules.files,
                    crate::ksal::file_key_of(vps_id, dev, ino),
                    FileRule { rule_id, access },
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => out.unresolved.push((name.clone(), e)),
            }
        }
    }
    if !out.rules.files.is_empty() {
        out.entry.guards |= guard::FILE_RULES;
    }
    out
}

/// Add a file rule; a second rule on the same inode adds its access bits
/// to the first (whose id its events keep).
fn add_file(files: &mut Vec<(FileRuleKey, FileRule)>, key: FileRuleKey, rule: FileRule) {
    match files.iter_mut().find(|(k, _)| *k == key) {
        Some((_, held)) => held.access |= rule.access,
        None => files.push((key, rule)),
    }
}

/// The egress entries of `network.deny_host`: each host network denied
/// (to flow-opening packets), its `allow_host` ports let through; a
/// `deny_egress` rule on the same network and port keeps its place.
fn host_rules(policy: &Policy, host: &[(Ipv4Addr, u8)], user: &[EgressDeny]) -> Vec<EgressDeny> {
    let mut out: Vec<EgressDeny> = Vec::new();
    for &(net, prefix) in host {
        let ports = std::iter::once((0, guard_rule::DENY_HOST)).chain(
            policy
                .network
                .allow_host
                .iter()
                .map(|p| (p.egress_port(), EGRESS_ALLOW)),
        );
        for (port, rule_id) in ports {
            let same = |e: &EgressDeny| e.net == net && e.prefix == prefix && e.port == port;
            if !user.iter().any(same) && !out.iter().any(same) {
                out.push(EgressDeny {
                    net,
                    prefix,
                    port,
                    rule_id,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    const POLICY: &str = r#"
mode: audit
files:
  deny:
    - path: /etc/secret
    - path: /etc/missing
      access: [write]
network:
  deny_egress:
    - cidr: 169.254.169.254/32
mounts:
  allow_types: [tmpfs]
kernel:
  bpf: deny
capabilities:
  deny: [CAP_SYS_RAWIO]
devices:
  allow: ["c 1:3 rwm"]
sysctl:
  allow_write: [net.ipv4.ip_forward]
"#;

    fn policy() -> Policy {
        Policy::parse("p.yaml", POLICY).expect("test policy parses")
    }

    fn resolve(path: &str) -> io::Result<(u64, u64)> {
        match path {
            "/etc/secret" => Ok((8, 42)),
            _ => Err(io::Error::from(io::ErrorKind::NotFound)),
        }
    }

    #[test]
    fn while_building_only_network_rules_hold() {
        let r = kernel_rules(&policy(), 5, Stage::Building, true, &[], |_| {
            panic!("nothing is resolved before the root exists")
        });
        assert_eq!(r.entry.guards, 0);
        assert_eq!(r.entry.caps_denied, 0);
        assert_eq!(r.entry.vps_id, 5);
        assert_eq!(r.entry.mode, ksal_common::mode::AUDIT);
        assert_eq!(r.rules.egress.len(), 1);
        assert_eq!(r.rules.egress[0].prefix, 32);
        assert!(r.rules.files.is_empty() && r.rules.devices.is_empty());
        assert!(r.rules.sysctls.is_empty() && r.rules.mount_types.is_empty());
    }

    #[test]
    fn once_built_with_lsm_everything_holds() {
        let p = policy();
        let r = kernel_rules(&p, 5, Stage::Built, true, &[], resolve);
        // With a file rule in the map, the file hooks look it up.
        assert_eq!(r.entry.guards, p.guards() | guard::FILE_RULES);
        assert_ne!(r.entry.guards & guard::BPF, 0);
        assert_eq!(r.entry.caps_denied, 1 << 17, "CAP_SYS_RAWIO is 17");
        assert_eq!(r.rules.files.len(), 1, "the missing file holds nothing yet");
        assert_eq!(r.rules.files[0].0, crate::ksal::file_key_of(5, 8, 42));
        assert_eq!(r.rules.mount_types.len(), 1);
        assert_eq!(r.rules.devices.len(), 1);
        assert_eq!(r.rules.sysctls.len(), 1);
        assert!(r.unresolved.is_empty());
    }

    #[test]
    fn file_hooks_skip_a_vps_whose_file_rules_resolve_to_nothing() {
        let r = kernel_rules(&policy(), 5, Stage::Built, true, &[], |_| {
            Err(io::Error::from(io::ErrorKind::NotFound))
        });
        assert!(r.rules.files.is_empty());
        assert_eq!(r.entry.guards & guard::FILE_RULES, 0);
    }

    #[test]
    fn without_lsm_only_the_cgroup_hooks_guards_hold() {
        let r = kernel_rules(&policy(), 5, Stage::Built, false, &[], |_| {
            panic!("file rules need LSM; nothing to resolve")
        });
        assert_eq!(r.entry.guards, guard::DEVICES | guard::SYSCTL);
        assert_eq!(r.entry.caps_denied, 0);
        assert!(r.rules.files.is_empty() && r.rules.mount_types.is_empty());
        assert_eq!((r.rules.devices.len(), r.rules.sysctls.len()), (1, 1));
    }

    #[test]
    fn rule_ids_are_named_after_their_policy_section() {
        let r = kernel_rules(&policy(), 1, Stage::Built, true, &[], resolve);
        let names: Vec<&str> = r.names.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "p:network.deny_egress[0]",
                "p:files.deny[0]",
                "p:files.deny[1]"
            ]
        );
        let egress_id = r.rules.egress[0].rule_id;
        assert_eq!(egress_id, policy::rule_id("p:network.deny_egress[0]"));
        assert_eq!(r.rules.files[0].1.rule_id, r.names[1].0);
    }

    #[test]
    fn a_path_that_cannot_be_resolved_is_reported_not_dropped_silently() {
        let r = kernel_rules(&policy(), 1, Stage::Built, true, &[], |path| {
            if path == "/etc/secret" {
                Err(io::Error::from_raw_os_error(libc::ELOOP))
            } else {
                Err(io::Error::from(io::ErrorKind::NotFound))
            }
        });
        assert!(r.rules.files.is_empty());
        assert_eq!(r.unresolved.len(), 1);
        assert_eq!(r.unresolved[0].0, "p:files.deny[0]");
    }

    #[test]
    fn a_write_rule_holds_the_name_of_the_file_and_of_each_directory_above() {
        let p = Policy::parse(
            "w.yaml",
            "files:\n  deny:\n    - path: /etc/ssh/key\n      access: [write]\n    - path: /etc/ssh/other\n    - path: /etc/secret\n      access: [read]\n",
        )
        .expect("parses");
        let inodes = [
            ("/etc", 1),
            ("/etc/ssh", 2),
            ("/etc/ssh/key", 3),
            ("/etc/ssh/other", 4),
            ("/etc/secret", 5),
        ];
        let r = kernel_rules(&p, 5, Stage::Built, true, &[], |path| {
            inodes
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, ino)| (8, *ino))
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        });
        let held: Vec<(u64, u32)> = r
            .rules
            .files
            .iter()
            .map(|(k, v)| (k.ino, v.access))
            .collect();
        let (key, other) = (r.names[0].0, r.names[1].0);
        assert_eq!(
            held,
            [
                (3, access::WRITE | access::NAME),
                (2, access::NAME),
                (1, access::NAME),
                (4, access::ANY | access::NAME),
                (5, access::READ),
            ],
            "directories once, the read rule alone"
        );
        assert_eq!(
            r.rules.files[1].1.rule_id, key,
            "the first rule names a shared directory"
        );
        assert_eq!(r.rules.files[3].1.rule_id, other);
    }

    #[test]
    fn the_host_is_denied_but_for_its_allowed_ports_and_user_rules_keep_their_place() {
        let p = Policy::parse(
            "h.yaml",
            "network:\n  deny_host: true\n  allow_host: [53, ping]\n  socket_families: [unix, inet]\n  deny_egress:\n    - cidr: 10.0.0.1\n      port: 53\n",
        )
        .expect("parses");
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let other = Ipv4Addr::new(192, 0, 2, 7);
        let r = kernel_rules(
            &p,
            3,
            Stage::Building,
            true,
            &[(gw, 32), (other, 32)],
            resolve,
        );
        let entry = |net: Ipv4Addr, port: u32| {
            r.rules
                .egress
                .iter()
                .filter(|e| e.net == net && e.prefix == 32 && e.port == port)
                .map(|e| e.rule_id)
                .collect::<Vec<_>>()
        };
        let user = policy::rule_id("h:network.deny_egress[0]");
        assert_eq!(
            entry(gw, 53),
            [user],
            "the user's rule, not the host exception"
        );
        assert_eq!(entry(gw, 0), [guard_rule::DENY_HOST]);
        assert_eq!(entry(other, 0), [guard_rule::DENY_HOST]);
        assert_eq!(entry(other, 53), [EGRESS_ALLOW]);
        assert_eq!(entry(other, ksal_common::EGRESS_PORT_PING), [EGRESS_ALLOW]);
        assert_eq!(r.rules.egress.len(), 6);
        assert_eq!(
            r.entry.families_allowed, 0,
            "guards wait for the built root"
        );
        let built = kernel_rules(&p, 3, Stage::Built, true, &[], resolve);
        assert_eq!(built.entry.families_allowed, (1 << 1) | (1 << 2));
        assert_ne!(built.entry.guards & guard::SOCKET_FAMILIES, 0);
    }

    #[test]
    fn enforce_mode_reaches_the_entry() {
        let p = Policy::parse("e.yaml", "mode: enforce\n").expect("parses");
        let r = kernel_rules(&p, 9, Stage::Built, true, &[], resolve);
        assert_eq!(r.entry.mode, ksal_common::mode::ENFORCE);
        assert_eq!(r.entry.guards, 0);
    }
}
