//! `vzhost create`: validate everything first, allocate an id, an id range
//! and an address, and build the VPS's directory in staging so a failed
//! create leaves nothing.
use std::{collections::BTreeMap, fs, os::unix::fs::PermissionsExt as _};

use serde::{Deserialize, Serialize};

use super::{
    error::{LifecycleError, Result},
    host::{Host, lock},
    ssh_keys::parse_keys,
    store::{StoreError, io},
};
use crate::{
    model::{IdMap, Limits, Name, Spec, SpecError, TemplateName, VpsDir, validate_hostname},
    rootfs::{
        disk::VpsDisk,
        safe::{Owner, SafeDir},
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
    /// Its IPv6 address; allocated when absent.
    #[serde(default)]
    pub ip6: Option<String>,
    /// The policy it runs under, instead of the one its name and labels select.
    #[serde(default)]
    pub policy: Option<String>,
    /// OpenSSH public keys (a key file's text) for its root's
    /// authorized_keys.
    #[serde(default)]
    pub ssh_keys: Option<String>,
}

const DEFAULT_TEMPLATE: &str = crate::rootfs::BUILTIN_BUSYBOX;
const DEFAULT_STOP_TIMEOUT: u64 = 10;

impl Host {
    pub fn create(&self, req: &CreateRequest) -> Result<Spec> {
        let name = Name::new(&req.name)?;
        let template = TemplateName::new(req.template.as_deref().unwrap_or(DEFAULT_TEMPLATE))?;
        let hostname = req.hostname.clone().unwrap_or_else(|| name.to_string());
        validate_hostname(&hostname)?;
        req.limits.validate()?;
        if self.store.exists(&name) {
            return Err(StoreError::Exists(name.to_string()).into());
        }
        self.templates.resolve(&template)?;
        if let Some(text) = &req.ssh_keys {
            parse_keys(text).map_err(|source| LifecycleError::SshKey {
                name: name.to_string(),
                source,
            })?;
        }
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
        let allocating = lock(&self.allocation);
        let existing = self.store.list()?;
        let id = existing.iter().map(|s| s.id).max().unwrap_or(0) + 1;
        let used: Vec<(String, std::net::Ipv4Addr)> = existing
            .iter()
            .filter_map(|s| s.ip.map(|ip| (s.name.to_string(), ip.addr)))
            .collect();
        let ip = match &req.ip {
            Some(want) => self.net.check(want, &used)?,
            None => self.net.allocate(&used)?,
        };
        let ip6 = match self.net.subnet6 {
            Some(prefix) => {
                let used: Vec<(String, std::net::Ipv6Addr)> = existing
                    .iter()
                    .filter_map(|s| s.ip6.map(|ip| (s.name.to_string(), ip)))
                    .collect();
                Some(match &req.ip6 {
                    Some(want) => prefix.check(want, &used)?,
                    None => prefix.allocate(&used)?,
                })
            }
            None => None,
        };
        let mut spec = Spec {
            name,
            template,
            hostname,
            limits: req.limits.clone(),
            idmap: IdMap { base: 0, count: 0 },
            labels: req.labels.clone(),
            stop_timeout: req.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
            id,
            disk: None,
            ip: Some(ip),
            ip6,
            policy: req.policy.clone(),
        };
        // Limits the command line leaves unset come from the policy.
        spec.limits = self
            .enforcement()
            .policy_of(&spec)?
            .fill_limits(&spec.limits);
        spec.limits.validate()?;
        spec.disk = spec
            .limits
            .disk
            .map(|_| VpsDisk::choose_backend(&self.store.root().join("vps"), project_id(id)));
        // The id range last: it is reserved host-wide, and given back if
        // the create fails from here on.
        spec.idmap = match req.idmap {
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
                // Other daemons' VPSs count too.
                self.ranges.reserve(m, &spec.name)?;
                m
            }
            None => {
                let used: Vec<IdMap> = existing.iter().map(|s| s.idmap).collect();
                self.ranges.allocate(&used, &spec.name)?
            }
        };
        let gateway = self.net.subnet.gateway();
        let created = self.store.create(&spec, |dir| {
            let result = make_layer(dir, &spec, gateway);
            if result.is_err() {
                let _ = VpsDisk::of(dir).unmount();
            }
            result
        });
        if let Err(e) = created {
            self.ranges.release(spec.idmap);
            return Err(e.into());
        }
        tracing::info!(vps = %spec.name, id, base = spec.idmap.base, "created");
        drop(allocating);
        if let Some(text) = &req.ssh_keys
            && let Err(e) = self.add_ssh_keys(spec.name.as_str(), text)
        {
            // All or nothing: a VPS without the keys asked for is not made.
            let _ = self.destroy(spec.name.as_str(), true);
            return Err(e);
        }
        Ok(spec)
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

/// Project id of a VPS's disk quota.
pub(super) fn project_id(vps_id: u32) -> u32 {
    0x10000 + vps_id
}

/// The VPS's own layer: its disk (limited if asked), upper and work
/// directories, and an upper that starts with its own root directory,
/// hostname, hosts and resolv.conf, owned by its root. The files go in
/// through [`SafeDir`], as every host write into a layer does.
fn make_layer(
    dir: &VpsDir,
    spec: &Spec,
    gateway: std::net::Ipv4Addr,
) -> std::result::Result<(), StoreError> {
    let disk = VpsDisk::of(dir);
    match (spec.disk, spec.limits.disk) {
        (Some(backend), Some(bytes)) => disk
            .create(backend, bytes, spec.idmap.base)
            .map_err(|e| io("make the disk", &disk.disk)(std::io::Error::other(e.to_string())))?,
        _ => fs::create_dir(&disk.disk).map_err(io("create", &disk.disk))?,
    }
    for d in [dir.upper(), dir.work()] {
        fs::create_dir(&d).map_err(io("create", &d))?;
    }
    let base = spec.idmap.base;
    let upper = dir.upper();
    // Fresh and the host's alone until it is given to the VPS's root.
    std::os::unix::fs::lchown(&upper, Some(base), Some(base)).map_err(io("chown", &upper))?;
    fs::set_permissions(&upper, fs::Permissions::from_mode(0o755)).map_err(io("chmod", &upper))?;
    let owner = Owner {
        uid: base,
        gid: base,
        mode: 0o644,
    };
    let etc = SafeDir::open(&upper, Some(spec.idmap))?.make_dir(
        "etc",
        Owner {
            mode: 0o755,
            ..owner
        },
    )?;
    let host = &spec.hostname;
    let own = spec
        .ip
        .map_or_else(|| "127.0.1.1".to_owned(), |ip| ip.addr.to_string());
    let own6 = spec
        .ip6
        .map_or_else(String::new, |ip| format!("{ip} {host}\n"));
    // No resolver runs on the host by default; the gateway is where one
    // (or NAT to the administrator's) would answer.
    for (file, text) in [
        ("hostname", format!("{host}\n")),
        (
            "hosts",
            format!("127.0.0.1 localhost\n::1 localhost\n{own} {host}\n{own6}"),
        ),
        ("resolv.conf", format!("nameserver {gateway}\n")),
    ] {
        etc.write(file, text.as_bytes(), owner)?;
    }
    super::init::write_machine_id(&etc, base)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
