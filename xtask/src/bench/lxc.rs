//! The peer: LXC containers over a copy of vzhost's busybox template.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::host::Host;

/// A container's network as a VPS has it: a veth on `bridge` with
/// `address` (CIDR) and a default route via `gateway`.
pub(super) struct Veth<'a> {
    pub(super) bridge: &'a str,
    pub(super) address: &'a str,
    pub(super) gateway: &'a str,
}

/// An LXC container configuration over the busybox template: the same
/// namespaces as a VPS (user, mount, PID, UTS, IPC, net, cgroup), proc
/// and a read-only sys, and either an empty network namespace or `veth`.
pub(super) fn lxc_config(
    dir: &Path,
    rootfs: &Path,
    uid_base: u32,
    init: bool,
    veth: Option<&Veth>,
) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!(
        "{}{}.conf",
        if init { "init" } else { "exec" },
        if veth.is_some() { "-veth" } else { "" }
    ));
    let net = match veth {
        None => "lxc.net.0.type = empty\n".to_owned(),
        Some(v) => format!(
            "lxc.net.0.type = veth\nlxc.net.0.link = {}\nlxc.net.0.flags = up\n\
             lxc.net.0.name = eth0\nlxc.net.0.ipv4.address = {}\n\
             lxc.net.0.ipv4.gateway = {}\n",
            v.bridge, v.address, v.gateway
        ),
    };
    let mut text = format!(
        "lxc.uts.name = bench\nlxc.rootfs.path = dir:{}\n{net}\
         lxc.idmap = u 0 {uid_base} 65536\nlxc.idmap = g 0 {uid_base} 65536\n\
         lxc.mount.auto = proc:mixed sys:ro cgroup:mixed\nlxc.autodev = 1\n\
         lxc.apparmor.profile = unconfined\nlxc.console.path = none\n",
        rootfs.display()
    );
    if init {
        text += "lxc.init.cmd = /sbin/init\n";
    }
    fs::write(&path, text)?;
    Ok(path)
}

/// An LXC tool with its containers kept under `dir`.
pub(super) fn lxc(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(args[0]);
    c.arg("-P").arg(dir).args(&args[1..]);
    c
}

/// A copy of vzhost's busybox template for LXC: vzhost keeps its own
/// state private (0700), so the peer gets the same files where it can
/// reach them.
pub(super) fn template_dir(host: &Host) -> anyhow::Result<PathBuf> {
    let v: serde_json::Value =
        serde_json::from_str(&host.quiet(&["template", "list", "-o", "json"])?)?;
    let template = v
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "busybox"))
        .and_then(|t| t["path"].as_str())
        .map(PathBuf::from)
        .context("no busybox template")?;
    let copy = host.state.join("lxc-rootfs");
    if !copy.exists() {
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&copy)
            .status()?;
        anyhow::ensure!(copied.success(), "cp -a of the busybox template failed");
    }
    Ok(copy)
}

/// The `lxc.pivot` cgroups LXC makes in every hierarchy to move itself.
pub(super) fn lxc_pivots() -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("lxc.pivot"))
        .filter(|p| p.is_dir())
        .collect()
}

/// Remove the `lxc.pivot` cgroups this run's LXC made.
pub(super) fn remove_lxc_pivots(before: &[PathBuf]) {
    for p in lxc_pivots() {
        if !before.contains(&p) {
            let _ = fs::remove_dir(&p);
        }
    }
}
