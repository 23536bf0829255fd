//! A VPS's kernel rules and what they put in the maps, as pure values: the
//! entries of each map, the change from one set of rules to the next, what
//! a restarted daemon learns from pinned maps, and what a prune removes.
//! `maps.rs` carries these plans out on the kernel's maps.
use std::collections::HashMap;

use ksal_common::{
    DeviceKey, EGRESS_FIXED_BITS, EgressKey, FSTYPE_LEN, FileRule, FileRuleKey, MountKey,
    SYSCTL_NAME_LEN, SysctlKey,
};

/// The kernel rules of one VPS, resolved by the host from its policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VpsRules {
    pub files: Vec<(FileRuleKey, FileRule)>,
    pub egress: Vec<EgressDeny>,
    /// Filesystem types it may mount (NUL-padded), when its guards restrict them.
    pub mount_types: Vec<[u8; FSTYPE_LEN]>,
    /// Devices it may use (the key's vps_id is filled in) and how.
    pub devices: Vec<(DeviceKey, u32)>,
    /// sysctls it may write, as paths under /proc/sys (NUL-padded).
    pub sysctls: Vec<[u8; SYSCTL_NAME_LEN]>,
}

/// Connections and datagrams to `net/prefix` (on `port`, or any port
/// with 0; `EGRESS_PORT_PING` for ICMP echo) are denied by rule `rule_id`
/// (`guard_rule::DENY_HOST`: only those opening a flow; `EGRESS_ALLOW`:
/// let through).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressDeny {
    pub net: std::net::Ipv4Addr,
    pub prefix: u8,
    pub port: u32,
    pub rule_id: u32,
}

/// A key of the egress LPM trie: its prefix length and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EgressEntry {
    pub prefix_len: u32,
    pub key: EgressKey,
}

impl EgressDeny {
    fn entry(&self, vps_id: u32) -> (EgressEntry, u32) {
        let entry = EgressEntry {
            prefix_len: EGRESS_FIXED_BITS + u32::from(self.prefix),
            key: EgressKey {
                vps_id_be: vps_id.to_be(),
                port_be: self.port.to_be(),
                ipv4_be: u32::from_ne_bytes(self.net.octets()),
            },
        };
        (entry, self.rule_id)
    }

    fn of_entry(entry: &EgressEntry, rule_id: u32) -> (u32, Self) {
        let k = entry.key;
        let deny = Self {
            net: std::net::Ipv4Addr::from(k.ipv4_be.to_ne_bytes()),
            prefix: entry.prefix_len.saturating_sub(EGRESS_FIXED_BITS) as u8,
            port: u32::from_be(k.port_be),
            rule_id,
        };
        (u32::from_be(k.vps_id_be), deny)
    }
}

/// What rules put in each map (for one VPS, or all of a map's contents).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Entries {
    pub files: Vec<(FileRuleKey, FileRule)>,
    pub egress: Vec<(EgressEntry, u32)>,
    pub mounts: Vec<(MountKey, u32)>,
    pub devices: Vec<(DeviceKey, u32)>,
    pub sysctls: Vec<(SysctlKey, u32)>,
}

impl VpsRules {
    /// The map entries of these rules as VPS `vps_id`'s.
    pub(super) fn entries(&self, vps_id: u32) -> Entries {
        Entries {
            files: self
                .files
                .iter()
                .map(|(k, v)| (FileRuleKey { vps_id, ..*k }, *v))
                .collect(),
            egress: self.egress.iter().map(|e| e.entry(vps_id)).collect(),
            mounts: self
                .mount_types
                .iter()
                .map(|t| (MountKey { vps_id, fstype: *t }, 1))
                .collect(),
            devices: self
                .devices
                .iter()
                .map(|(k, a)| (DeviceKey { vps_id, ..*k }, *a))
                .collect(),
            sysctls: self
                .sysctls
                .iter()
                .map(|n| (SysctlKey { vps_id, name: *n }, 1))
                .collect(),
        }
    }

    /// Rules covering every entry of `self` and of `other`: what may be in
    /// the maps after a change from one to the other stopped half-way.
    pub(super) fn covering(mut self, other: Self) -> Self {
        self.files.extend(other.files);
        self.egress.extend(other.egress);
        self.mount_types.extend(other.mount_types);
        self.devices.extend(other.devices);
        self.sysctls.extend(other.sysctls);
        self
    }
}

/// The rules of each VPS, read back from every map's contents (after a
/// restart with pinned maps, so the next sync removes what went).
pub(super) fn recover(all: Entries) -> HashMap<u32, VpsRules> {
    let mut by_vps: HashMap<u32, VpsRules> = HashMap::new();
    for (k, v) in all.files {
        by_vps.entry(k.vps_id).or_default().files.push((k, v));
    }
    for (entry, rule_id) in &all.egress {
        let (vps_id, deny) = EgressDeny::of_entry(entry, *rule_id);
        by_vps.entry(vps_id).or_default().egress.push(deny);
    }
    for (k, _) in all.mounts {
        by_vps
            .entry(k.vps_id)
            .or_default()
            .mount_types
            .push(k.fstype);
    }
    for (k, access) in all.devices {
        let rules = by_vps.entry(k.vps_id).or_default();
        rules.devices.push((DeviceKey { vps_id: 0, ..k }, access));
    }
    for (k, _) in all.sysctls {
        by_vps.entry(k.vps_id).or_default().sysctls.push(k.name);
    }
    by_vps
}

/// How one map goes from `old` entries to `new` ones.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan<K, V> {
    /// Entries new or with a new value, inserted first...
    pub insert: Vec<(K, V)>,
    /// ...then the keys only `old` has are removed, so a rule in both
    /// stays in force throughout.
    pub remove: Vec<K>,
}

pub(super) fn plan<K: Copy + PartialEq, V: Copy + PartialEq>(
    old: &[(K, V)],
    new: &[(K, V)],
) -> Plan<K, V> {
    let mut insert: Vec<(K, V)> = Vec::new();
    for e in new.iter().filter(|e| !old.contains(e)) {
        if !insert.contains(e) {
            insert.push(*e);
        }
    }
    let mut remove: Vec<K> = Vec::new();
    for (k, _) in old.iter().filter(|(k, _)| !new.iter().any(|(n, _)| n == k)) {
        if !remove.contains(k) {
            remove.push(*k);
        }
    }
    Plan { insert, remove }
}

/// What a prune takes out of the KSAL.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Prune {
    /// cgroups registered or addressed whose VPS no longer runs.
    pub cgroups: Vec<u64>,
    /// VPS ids with rules in the maps that no longer run.
    pub vps_ids: Vec<u32>,
}

/// Decide a prune from what the maps hold and what runs (`running`:
/// cgroup id and VPS id of each running VPS).
pub(super) fn prune(
    registered: &[u64],
    addressed: &[u64],
    with_rules: impl IntoIterator<Item = u32>,
    running: &[(u64, u32)],
) -> Prune {
    let mut cgroups: Vec<u64> = registered
        .iter()
        .chain(addressed)
        .copied()
        .filter(|cg| !running.iter().any(|(c, _)| c == cg))
        .collect();
    cgroups.sort_unstable();
    cgroups.dedup();
    let mut vps_ids: Vec<u32> = with_rules
        .into_iter()
        .filter(|id| !running.iter().any(|(_, v)| v == id))
        .collect();
    vps_ids.sort_unstable();
    vps_ids.dedup();
    Prune { cgroups, vps_ids }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn file(ino: u64, rule_id: u32) -> (FileRuleKey, FileRule) {
        let key = FileRuleKey {
            vps_id: 0,
            dev: 8 << 20,
            ino,
        };
        (key, FileRule { rule_id, access: 3 })
    }

    fn deny(net: [u8; 4], prefix: u8, port: u32, rule_id: u32) -> EgressDeny {
        EgressDeny {
            net: Ipv4Addr::from(net),
            prefix,
            port,
            rule_id,
        }
    }

    fn fstype(name: &str) -> [u8; FSTYPE_LEN] {
        let mut t = [0; FSTYPE_LEN];
        t[..name.len()].copy_from_slice(name.as_bytes());
        t
    }

    fn sample() -> VpsRules {
        VpsRules {
            files: vec![file(11, 20), file(12, 21)],
            egress: vec![
                deny([0, 0, 0, 0], 0, 9090, 30),
                deny([0, 0, 0, 0], 0, 9091, 31),
            ],
            mount_types: vec![fstype("tmpfs")],
            devices: vec![(
                DeviceKey {
                    vps_id: 0,
                    kind: 2,
                    major: 1,
                    minor: 3,
                },
                6,
            )],
            sysctls: vec![[b'x'; SYSCTL_NAME_LEN]],
        }
    }

    #[test]
    fn entries_carry_the_vps_id_in_every_key() {
        let e = sample().entries(7);
        assert!(e.files.iter().all(|(k, _)| k.vps_id == 7));
        assert!(e.mounts.iter().all(|(k, v)| k.vps_id == 7 && *v == 1));
        assert!(e.devices.iter().all(|(k, _)| k.vps_id == 7));
        assert!(e.sysctls.iter().all(|(k, _)| k.vps_id == 7));
        assert!(
            e.egress
                .iter()
                .all(|(k, _)| u32::from_be(k.key.vps_id_be) == 7)
        );
    }

    #[test]
    fn egress_rules_for_one_network_on_two_ports_are_two_entries() {
        let e = sample().entries(7);
        assert_eq!(e.egress.len(), 2);
        assert_ne!(e.egress[0].0, e.egress[1].0, "the port is part of the key");
        let (entry, rule) = e.egress[1];
        assert_eq!(rule, 31);
        assert_eq!(
            entry.prefix_len, EGRESS_FIXED_BITS,
            "a /0 matches every address"
        );
        assert_eq!(u32::from_be(entry.key.port_be), 9091);
        let host = deny([10, 1, 2, 3], 32, 0, 5).entry(7).0;
        assert_eq!(host.prefix_len, EGRESS_FIXED_BITS + 32);
        assert_eq!(
            host.key.ipv4_be.to_ne_bytes(),
            [10, 1, 2, 3],
            "network order"
        );
    }

    #[test]
    fn rules_survive_the_trip_through_the_maps() {
        let (a, b) = (
            sample(),
            VpsRules {
                egress: vec![
                    deny([10, 0, 0, 0], 8, 80, 40),
                    deny([10, 1, 0, 0], 16, 443, 41),
                ],
                ..Default::default()
            },
        );
        let mut all = a.entries(3);
        let eb = b.entries(4);
        all.egress.extend(eb.egress);
        let back = recover(all);
        let mut a3 = a.clone();
        a3.files.iter_mut().for_each(|(k, _)| k.vps_id = 3);
        assert_eq!(back.get(&3), Some(&a3));
        assert_eq!(back.get(&4), Some(&b));
        assert_eq!(back.len(), 2);
    }

    #[test]
    fn a_plan_inserts_before_it_removes_and_keeps_what_stays() {
        let old = [(1u32, 10u32), (2, 20), (3, 30)];
        let new = [(2, 20), (3, 33), (4, 40)];
        let p = plan(&old, &new);
        assert_eq!(
            p.insert,
            [(3, 33), (4, 40)],
            "the changed value and the new key"
        );
        assert_eq!(
            p.remove,
            [1],
            "only the key that went; 2 and 3 stay in force"
        );
        let same = plan(&new, &new);
        assert!(same.insert.is_empty() && same.remove.is_empty());
        let cleared = plan(&new, &[]);
        assert_eq!(cleared.remove, [2, 3, 4]);
    }

    #[test]
    fn a_plan_from_recovered_duplicates_touches_each_key_once() {
        let old = [(1u32, 10u32), (1, 10), (2, 20)];
        let p = plan(&old, &[(2, 21), (2, 21)]);
        assert_eq!(
            p,
            Plan {
                insert: vec![(2, 21)],
                remove: vec![1]
            }
        );
    }

    #[test]
    fn changing_egress_ports_removes_only_the_port_that_went() {
        let old = sample().entries(7).egress;
        let mut next = sample();
        next.egress.remove(0);
        next.egress.push(deny([0, 0, 0, 0], 0, 9092, 32));
        let p = plan(&old, &next.entries(7).egress);
        assert_eq!(p.insert.len(), 1);
        assert_eq!(u32::from_be(p.insert[0].0.key.port_be), 9092);
        assert_eq!(p.remove.len(), 1);
        assert_eq!(u32::from_be(p.remove[0].key.port_be), 9090);
    }

    #[test]
    fn after_a_half_done_change_the_next_sync_still_removes_both_sides() {
        let old = sample();
        let half = VpsRules {
            files: vec![file(99, 50)],
            ..Default::default()
        };
        let record = old.clone().covering(half);
        let p = plan(&record.entries(7).files, &[]);
        let inos: Vec<u64> = p.remove.iter().map(|k| k.ino).collect();
        assert_eq!(inos, [11, 12, 99]);
    }

    #[test]
    fn prune_takes_out_what_no_running_vps_owns() {
        let running = [(100, 1), (200, 2)];
        let p = prune(&[100, 300, 400], &[200, 300, 500], [1, 2, 3, 3], &running);
        assert_eq!(p.cgroups, [300, 400, 500], "each gone cgroup once");
        assert_eq!(p.vps_ids, [3]);
        let none = prune(&[100], &[200], [1, 2], &running);
        assert_eq!(
            none,
            Prune {
                cgroups: vec![],
                vps_ids: vec![]
            }
        );
    }
}
