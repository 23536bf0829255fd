//! What `vzhost exec` and `enter` need of a running VPS.
use super::{
    error::{LifecycleError, Result},
    host::Host,
};
use crate::{model::Name, ns::attach::AttachPlan};

impl Host {
    /// How to run `argv` inside a running VPS.
    pub fn attach_plan(&self, name: &str, argv: Vec<String>, tty: bool) -> Result<AttachPlan> {
        let name = Name::new(name)?;
        self.store.load(&name)?;
        let runtime = self
            .live_runtime(&name)
            .ok_or_else(|| LifecycleError::NotRunning(name.to_string()))?;
        let cgroup = self.cgroup(&name);
        Ok(AttachPlan {
            init_pid: runtime.init_pid,
            init_start: runtime.init_start,
            cgroup: cgroup.v2_path().to_owned(),
            cgroup_path: cgroup.v2_rel().to_owned(),
            v1_procs: cgroup.v1_procs_files(),
            argv,
            tty,
        })
    }
}
