//! The VPS table and the rule maps: registering VPSs, carrying out the
//! plans of `rules` (sync, recovery after a restart, prune), and the
//! direct inserts the tests and benchmarks use.
use std::{os::unix::fs::MetadataExt as _, path::Path};

use aya::{
    Pod,
    maps::{HashMap, LpmTrie, MapData, MapError, lpm_trie::Key as LpmKey},
};
use ksal_common::{
    DeviceKey, EgressKey, FileRule, FileRuleKey, MountKey, SysctlKey, VpsEntry, VpsNet, map_names,
};

use super::{
    Ksal, VpsRules,
    error::{KsalError, Result, map_err},
    file_key_of,
    rules::{self, EgressDeny, EgressEntry, Entries, Plan},
};

impl Ksal {
    /// Put the tasks of cgroup `cgroup_id` (and its descendants) under the
    /// rules of `vps_id`, in `mode` (`ksal_common::mode`), its file rules
    /// (those [`Self::deny_file`] adds) looked up.
    pub fn register_vps(&mut self, cgroup_id: u64, vps_id: u32, mode: u32) -> Result<()> {
        self.register_entry(
            cgroup_id,
            VpsEntry {
                vps_id,
                mode,
                guards: ksal_common::guard::FILE_RULES,
                ..Default::default()
            },
        )
    }

    /// Register (or update in place) a VPS with its mode and guards.
    pub fn register_entry(&mut self, cgroup_id: u64, entry: VpsEntry) -> Result<()> {
        self.typed_map(map_names::VPS)?
            .insert(cgroup_id, entry, 0)
            .map_err(map_err(map_names::VPS))
    }

    pub fn unregister_vps(&mut self, cgroup_id: u64) -> Result<()> {
        remove_key::<u64, VpsEntry>(
            &mut self.typed_map(map_names::VPS)?,
            &cgroup_id,
            map_names::VPS,
        )
    }

    /// Deny `vps_id` the `access` (`ksal_common::access`) to the file at
    /// `path`, identified by device and inode so every other name of the
    /// same file is covered too. (Outside the rules `sync_rules` keeps.)
    pub fn deny_file(&mut self, vps_id: u32, path: &Path, access: u32, rule_id: u32) -> Result<()> {
        let meta = std::fs::metadata(path).map_err(|source| KsalError::Path {
            path: path.display().to_string(),
            source,
        })?;
        let key = file_key_of(vps_id, meta.dev(), meta.ino());
        self.typed_map(map_names::FILE_RULES)?
            .insert(key, FileRule { rule_id, access }, 0)
            .map_err(map_err(map_names::FILE_RULES))
    }

    /// Deny VPS `vps_id` connections and datagrams to `net/prefix` (on
    /// `port`, or any port with 0). (Outside the rules `sync_rules` keeps.)
    pub fn deny_egress(
        &mut self,
        vps_id: u32,
        net: std::net::Ipv4Addr,
        prefix: u8,
        port: u16,
        rule_id: u32,
    ) -> Result<()> {
        let rules = VpsRules {
            egress: vec![EgressDeny {
                net,
                prefix,
                port: u32::from(port),
                rule_id,
            }],
            ..Default::default()
        };
        self.apply_egress(rules::plan(&[], &rules.entries(vps_id).egress))
    }

    /// Make `rules` the rules of VPS `vps_id`: what is new is added, what
    /// is gone is removed; rules in both stay in force throughout.
    pub fn sync_rules(&mut self, vps_id: u32, rules: VpsRules) -> Result<()> {
        let old = self.applied.remove(&vps_id).unwrap_or_default();
        let result = self.apply(&old.entries(vps_id), &rules.entries(vps_id));
        // After a failure part of either may be in the maps: the next sync
        // starts from both.
        let applied = match &result {
            Ok(()) => rules,
            Err(_) => old.covering(rules),
        };
        self.applied.insert(vps_id, applied);
        result
    }

    fn apply(&mut self, old: &Entries, new: &Entries) -> Result<()> {
        self.apply_hash(map_names::FILE_RULES, rules::plan(&old.files, &new.files))?;
        self.apply_hash(
            map_names::MOUNT_ALLOW,
            rules::plan(&old.mounts, &new.mounts),
        )?;
        self.apply_hash(
            map_names::DEVICE_ALLOW,
            rules::plan(&old.devices, &new.devices),
        )?;
        self.apply_hash(
            map_names::SYSCTL_ALLOW,
            rules::plan(&old.sysctls, &new.sysctls),
        )?;
        self.apply_egress(rules::plan(&old.egress, &new.egress))
    }

    /// Forget VPS `vps_id` entirely: its registration, address and rules.
    pub fn forget_vps(&mut self, cgroup_id: u64, vps_id: u32) {
        let _ = self.unregister_vps(cgroup_id);
        self.forget_address(cgroup_id);
        self.forget_veths(cgroup_id);
        if self.sync_rules(vps_id, VpsRules::default()).is_ok() {
            self.applied.remove(&vps_id);
        }
    }

    /// Forget VPS cgroup `cgroup_id`'s address. Its guard programs stay
    /// with the cgroup and go when it is removed.
    fn forget_address(&mut self, cgroup_id: u64) {
        if let Ok(mut m) = self.typed_map::<u64, VpsNet>(map_names::VPS_NET) {
            let _ = m.remove(&cgroup_id);
        }
    }

    /// After a restart with pinned maps: learn the rules a previous
    /// daemon left in them, so the next sync removes what is gone.
    pub(super) fn recover_applied(&mut self) -> Result<()> {
        let egress = self
            .egress_rules()?
            .iter()
            .filter_map(std::result::Result::ok)
            .map(|(k, rule_id)| {
                let entry = EgressEntry {
                    prefix_len: k.prefix_len(),
                    key: k.data(),
                };
                (entry, rule_id)
            })
            .collect();
        let all = Entries {
            files: self.entries::<FileRuleKey, FileRule>(map_names::FILE_RULES)?,
            egress,
            mounts: self.entries::<MountKey, u32>(map_names::MOUNT_ALLOW)?,
            devices: self.entries::<DeviceKey, u32>(map_names::DEVICE_ALLOW)?,
            sysctls: self.entries::<SysctlKey, u32>(map_names::SYSCTL_ALLOW)?,
        };
        self.applied = rules::recover(all);
        Ok(())
    }

    /// After adopting: forget every VPS not in `running` (cgroup id, VPS
    /// id): its registration, address and rules.
    pub fn prune(&mut self, running: &[(u64, u32)]) {
        fn cgroups<V>(entries: Vec<(u64, V)>) -> Vec<u64> {
            entries.into_iter().map(|(c, _)| c).collect()
        }
        let registered = cgroups(
            self.entries::<u64, VpsEntry>(map_names::VPS)
                .unwrap_or_default(),
        );
        let mut addressed = cgroups(
            self.entries::<u64, VpsNet>(map_names::VPS_NET)
                .unwrap_or_default(),
        );
        addressed.extend(self.veth_cgroups());
        let gone = rules::prune(
            &registered,
            &addressed,
            self.applied.keys().copied(),
            running,
        );
        for cg in gone.cgroups {
            tracing::info!(cgroup_id = cg, "removing what a gone VPS left in the KSAL");
            let _ = self.unregister_vps(cg);
            self.forget_address(cg);
            self.forget_veths(cg);
        }
        for id in gone.vps_ids {
            if self.sync_rules(id, VpsRules::default()).is_ok() {
                self.applied.remove(&id);
            }
        }
    }

    pub(super) fn typed_map<K: Pod, V: Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>> {
        let map = self.ebpf.map_mut(name).ok_or(KsalError::NoMap(name))?;
        HashMap::try_from(map).map_err(map_err(name))
    }

    /// Every entry of hash map `name`.
    fn entries<K: Pod, V: Pod>(&mut self, name: &'static str) -> Result<Vec<(K, V)>> {
        Ok(self
            .typed_map::<K, V>(name)?
            .iter()
            .filter_map(std::result::Result::ok)
            .collect())
    }

    fn apply_hash<K: Pod, V: Pod>(&mut self, name: &'static str, plan: Plan<K, V>) -> Result<()> {
        let mut map = self.typed_map::<K, V>(name)?;
        for (k, v) in plan.insert {
            map.insert(k, v, 0).map_err(map_err(name))?;
        }
        for k in plan.remove {
            remove_key(&mut map, &k, name)?;
        }
        Ok(())
    }

    fn egress_rules(&mut self) -> Result<LpmTrie<&mut MapData, EgressKey, u32>> {
        let map = self
            .ebpf
            .map_mut(map_names::EGRESS_RULES)
            .ok_or(KsalError::NoMap(map_names::EGRESS_RULES))?;
        LpmTrie::try_from(map).map_err(map_err(map_names::EGRESS_RULES))
    }

    fn apply_egress(&mut self, plan: Plan<EgressEntry, u32>) -> Result<()> {
        let name = map_names::EGRESS_RULES;
        let mut map = self.egress_rules()?;
        let key = |e: EgressEntry| LpmKey::new(e.prefix_len, e.key);
        for (e, rule_id) in plan.insert {
            map.insert(&key(e), rule_id, 0).map_err(map_err(name))?;
        }
        for e in plan.remove {
            match map.remove(&key(e)) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(err) => return Err(map_err(name)(err)),
            }
        }
        Ok(())
    }
}

/// Remove `key` from `map`; a key already gone is fine.
fn remove_key<K: Pod, V: Pod>(
    map: &mut HashMap<&mut MapData, K, V>,
    key: &K,
    name: &'static str,
) -> Result<()> {
    match map.remove(key) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(map_err(name)(e)),
    }
}
