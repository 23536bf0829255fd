//! `vzhost set`: change limits, at once on a running VPS, and keep them.
use super::{
    create::project_id,
    error::{LifecycleError, Result},
    host::{Host, lock},
};
use crate::{
    model::{DiskBackend, Limits, Name, Spec},
    rootfs::disk::{VpsDisk, has_project_quota},
};

impl Host {
    /// Change limits; applied at once to a running VPS, and persisted.
    pub fn set(&self, name: &str, limits: &Limits) -> Result<Spec> {
        let name = Name::new(name)?;
        let vps_lock = self.vps_lock(&name);
        let _serial = lock(&vps_lock);
        let mut spec = self.store.load(&name)?;
        let mut merged = spec.limits.clone();
        merged.merge(limits);
        merged.validate()?;
        if self.live_runtime(&name).is_some() {
            self.cgroup(&name)
                .apply(&merged)
                .map_err(|source| LifecycleError::Cgroup {
                    name: name.to_string(),
                    source,
                })?;
        }
        if let Some(bytes) = limits.disk {
            let disk = VpsDisk::of(&self.store.dir(&name));
            let disk_err = |source| LifecycleError::Disk {
                name: name.to_string(),
                source,
            };
            match spec.disk {
                Some(backend) => disk.resize(backend, bytes).map_err(disk_err)?,
                None => {
                    let project = project_id(spec.id);
                    if !has_project_quota(&disk.disk) {
                        return Err(LifecycleError::NoDiskLimit(name.to_string()));
                    }
                    disk.add_project_limit(project, bytes).map_err(disk_err)?;
                    spec.disk = Some(DiskBackend::ProjectQuota { project });
                }
            }
        }
        spec.limits = merged;
        self.store.save(&spec)?;
        Ok(spec)
    }
}
