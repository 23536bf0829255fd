//! cgroup v2 core interface files whose effect is a kernel action rather
//! than a setting, kept on the seam so tests see when they are used.
use std::{io, path::Path};

use super::{Call, dispatch};

/// SIGKILL every process in the cgroup at `dir` and its descendants
/// (`cgroup.kill`, Linux 5.14+; ENOENT before).
pub fn cgroup_kill(dir: &Path) -> io::Result<()> {
    dispatch(
        || Call::CgroupKill {
            path: dir.display().to_string(),
        },
        || std::fs::write(dir.join("cgroup.kill"), "1").map(|()| 0),
    )?;
    Ok(())
}
