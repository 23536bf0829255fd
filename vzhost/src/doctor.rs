//! `vzhost doctor`: what the kernel offers vzhost, each feature checked by
//! the real operation where one exists, reported in plain words.
use std::{os::unix::process::CommandExt as _, process::Command};

use serde::Serialize;

use crate::{cgroup, ksal};

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, result: Result<String, String>) -> Self {
        match result {
            Ok(detail) => Self {
                name,
                ok: true,
                detail,
            },
            Err(detail) => Self {
                name,
                ok: false,
                detail,
            },
        }
    }
}

/// Run every check. Mounts securityfs and bpffs if they are missing, as the
/// daemon would, and says so.
pub fn run() -> Vec<Check> {
    vec![
        Check::new("bpf-lsm-active", lsm_listed()),
        Check::new(
            "bpf-lsm-load",
            ksal::probe_lsm()
                .map(|()| "an LSM program loaded".into())
                .map_err(|e| e.to_string()),
        ),
        Check::new("btf", btf()),
        Check::new("cgroup-layout", cgroup_layout()),
        Check::new("cgroup-bpf-attach", cgroup_attach()),
        Check::new(
            "tc-bpf-load",
            ksal::probe_tc()
                .map(|()| "the tc program that checks what VPSs send on their veth loaded".into()),
        ),
        Check::new("overlayfs", overlayfs()),
        Check::new("user-namespaces", user_namespaces()),
        Check::new("bpffs", mount_report(ksal::kernel_fs::BPFFS, "bpf")),
    ]
}

fn lsm_listed() -> Result<String, String> {
    let lsms = ksal::kernel_fs::active_lsms()
        .map_err(|e| format!("cannot read the active LSM list from securityfs: {e}"))?;
    let list = lsms.join(",");
    if lsms.iter().any(|l| l == "bpf") {
        Ok(format!("active LSMs: {list}"))
    } else {
        Err(format!(
            "bpf is not among the active LSMs ({list}); boot with lsm={list},bpf"
        ))
    }
}

fn btf() -> Result<String, String> {
    let btf = ksal::btf::Btf::from_sys_fs().map_err(|e| e.to_string())?;
    btf.kernel_layout()
        .map(|_| "/sys/kernel/btf/vmlinux has the structs KSAL reads".into())
        .map_err(|e| e.to_string())
}

fn cgroup_layout() -> Result<String, String> {
    let layout = cgroup::Layout::detect().map_err(|e| e.to_string())?;
    let root = layout.unified_root().map_err(|e| e.to_string())?;
    let mut detail = format!(
        "{} (v2 at {}, v2 controllers: {})",
        layout.kind(),
        root.display(),
        if layout.v2_controllers.is_empty() {
            "none".to_owned()
        } else {
            layout.v2_controllers.join(" ")
        }
    );
    if !layout.v1.is_empty() {
        let v1: Vec<_> = layout.v1.iter().map(|m| m.controller.as_str()).collect();
        detail.push_str(&format!("; v1 controllers: {}", v1.join(" ")));
    }
    Ok(detail)
}

/// Attach the probe program to a scratch child of our own v2 cgroup.
fn cgroup_attach() -> Result<String, String> {
    let layout = cgroup::Layout::detect().map_err(|e| e.to_string())?;
    let root = layout.unified_root().map_err(|e| e.to_string())?;
    let own = cgroup::v2_path_of(None).map_err(|e| e.to_string())?;
    let scratch = root
        .join(own.trim_start_matches('/'))
        .join(format!("vzhost-doctor-{}", std::process::id()));
    std::fs::create_dir(&scratch)
        .map_err(|e| format!("cannot create scratch cgroup {}: {e}", scratch.display()))?;
    let result = ksal::probe_cgroup_attach(&scratch);
    let _ = std::fs::remove_dir(&scratch);
    result
        .map(|()| "a cgroup_skb program attached to a cgroup v2 directory".into())
        .map_err(|e| e.to_string())
}

fn overlayfs() -> Result<String, String> {
    let fs = std::fs::read_to_string("/proc/filesystems").map_err(|e| e.to_string())?;
    if fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        Ok("overlay is registered".into())
    } else {
        Err("overlay is not in /proc/filesystems; load it with `modprobe overlay`".into())
    }
}

fn user_namespaces() -> Result<String, String> {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .map_err(|e| format!("kernel without user namespaces: {e}"))?;
    if max.trim() == "0" {
        return Err("user.max_user_namespaces is 0; raise it with sysctl".into());
    }
    let mut probe = Command::new("/bin/sh");
    probe.args(["-c", "exit 0"]);
    // SAFETY: unshare is async-signal-safe and touches only the child.
    unsafe {
        probe.pre_exec(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).map_err(std::io::Error::from)
        });
    }
    match probe.status() {
        Ok(s) if s.success() => Ok(format!("a user namespace was created (max {})", max.trim())),
        Ok(s) => Err(format!("probe exited with {s}")),
        Err(e) => Err(format!("unshare(CLONE_NEWUSER) failed: {e}")),
    }
}

fn mount_report(target: &str, fstype: &str) -> Result<String, String> {
    match ksal::kernel_fs::ensure_mounted(target, fstype) {
        Ok(false) => Ok(format!("mounted at {target}")),
        Ok(true) => Ok(format!("was not mounted; vzhost mounted it at {target}")),
        Err(e) => Err(format!("cannot mount {fstype} at {target}: {e}")),
    }
}
