//! `vzhost destroy`: stop it if asked to, then remove everything it had.
use super::{
    error::{LifecycleError, Result},
    host::{Host, lock},
};
use crate::{model::Name, rootfs::disk::VpsDisk};

impl Host {
    /// Destroy VPS `name`; its KSAL id, whose events the caller may drop.
    pub fn destroy(&self, name: &str, force: bool) -> Result<u32> {
        let name = Name::new(name)?;
        let vps_lock = self.vps_lock(&name);
        let _serial = lock(&vps_lock);
        let spec = self.store.load(&name)?;
        if self.live_runtime(&name).is_some() {
            if !force {
                return Err(LifecycleError::RunningNoForce(name.to_string()));
            }
            self.stop_locked(&name)?;
        }
        self.cleanup_stopped(&spec, &self.cgroup(&name));
        self.enforcement().forget_destroyed(spec.id);
        VpsDisk::of(&self.store.dir(&name))
            .unmount()
            .map_err(|source| LifecycleError::Disk {
                name: name.to_string(),
                source,
            })?;
        self.store.remove(&name)?;
        self.ranges.release(spec.idmap);
        tracing::info!(vps = %name, "destroyed");
        Ok(spec.id)
    }
}
