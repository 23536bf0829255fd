//! `vzhost stop` and `restart`, and adopting running VPSs when the daemon
//! starts again.
use std::os::fd::AsFd as _;

use super::{
    error::{LifecycleError, Result},
    host::{Host, lock},
};
use crate::{
    enforce::VpsRoot,
    model::{DiskBackend, Name, Runtime},
    rootfs::disk::VpsDisk,
    sys::{pidfd_send_signal, pidfd_wait_exit, pin_process},
};

impl Host {
    pub fn stop(&self, name: &str) -> Result<()> {
        let name = Name::new(name)?;
        let vps_lock = self.vps_lock(&name);
        let _serial = lock(&vps_lock);
        self.stop_locked(&name)
    }

    /// Stop a VPS whose lock the caller holds.
    pub(super) fn stop_locked(&self, name: &Name) -> Result<()> {
        let spec = self.store.load(name)?;
        let runtime = self
            .live_runtime(name)
            .ok_or_else(|| LifecycleError::NotRunning(name.to_string()))?;
        let span = tracing::info_span!("stop", vps = %name);
        let _enter = span.enter();
        if let Some(pidfd) = pin_process(runtime.init_pid, runtime.init_start) {
            let signal = runtime.init.stop_signal();
            let _ = pidfd_send_signal(pidfd.as_fd(), signal);
            let ms = (spec.stop_timeout * 1000).min(i32::MAX as u64) as i32;
            if !pidfd_wait_exit(pidfd.as_fd(), ms) {
                tracing::warn!(
                    timeout = spec.stop_timeout,
                    signal,
                    "init did not stop; killing"
                );
                let _ = pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
                pidfd_wait_exit(pidfd.as_fd(), 10_000);
            }
        }
        self.cleanup_stopped(&spec, &self.cgroup(name));
        tracing::info!("stopped");
        Ok(())
    }

    pub fn restart(&self, name: &str) -> Result<Runtime> {
        let vps = Name::new(name)?;
        {
            let vps_lock = self.vps_lock(&vps);
            let _serial = lock(&vps_lock);
            if self.live_runtime(&vps).is_some() {
                self.stop_locked(&vps)?;
            }
        }
        self.start(name)
    }

    /// After a daemon restart: keep running VPSs (re-registering them with
    /// the KSAL) and clean up after those whose init died meanwhile.
    pub fn adopt(&self) -> Result<Vec<String>> {
        let mut adopted = Vec::new();
        let mut running = Vec::new();
        for spec in self.store.list()? {
            // /run was emptied at boot, or an older daemon reserved nothing.
            if let Err(e) = self.ranges.reserve(spec.idmap, &spec.name) {
                tracing::error!(vps = %spec.name, "its id range is not its own alone: {e}");
            }
            if spec.disk == Some(DiskBackend::Image)
                && let Err(e) = VpsDisk::of(&self.store.dir(&spec.name)).mount_image()
            {
                tracing::error!(vps = %spec.name, %e, "cannot mount its disk image");
            }
            let cgroup = self.cgroup(&spec.name);
            if let Some(runtime) = self.live_runtime(&spec.name) {
                match cgroup.id() {
                    Ok(id) => {
                        // No root was captured at this VPS's launch by this
                        // daemon: take it from its init now (see capture).
                        let root = VpsRoot::capture(runtime.init_pid, runtime.init_start)
                            .inspect_err(|e| tracing::error!(vps = %spec.name, "ENFORCEMENT: cannot open its root; its file rules are not in force: {e}"))
                            .ok();
                        let readopted = self.enforcement().readopt(
                            &spec,
                            (cgroup.v2_path(), id),
                            root,
                            &self.net,
                        );
                        if let Err(e) = readopted {
                            tracing::error!(vps = %spec.name, "ENFORCEMENT: cannot guard it again: {e}");
                        }
                        running.push((id, spec.id));
                    }
                    Err(e) => {
                        tracing::error!(vps = %spec.name, %e, "ENFORCEMENT: its cgroup is gone")
                    }
                }
                self.watch(&spec.name, &runtime);
                tracing::info!(vps = %spec.name, "adopted running VPS");
                adopted.push(spec.name.to_string());
            } else if self.store.runtime(&spec.name).is_some() {
                tracing::warn!(vps = %spec.name, "init died while the daemon was away; cleaning up");
                self.cleanup_stopped(&spec, &cgroup);
            }
        }
        // Pins and map entries of VPSs that are gone (destroyed or
        // stopped while no daemon ran) go too.
        self.enforcement().prune(&running);
        Ok(adopted)
    }
}
