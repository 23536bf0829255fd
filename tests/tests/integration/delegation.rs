//! The VPS's cgroup is delegated to its root (natively on the hybrid host,
//! in the VM on pure v2 with nsdelegate): it runs its own tree below it,
//! but cannot raise its limits, move a process out of its cgroup, or see
//! another VPS's cgroups. Busybox VPSs; the Debian ones are `systemd::`.
use std::{fs, io, path::PathBuf};

use vzhost_tests::Daemon;

fn running(d: &Daemon, names: &[&str], limits: &[&str]) {
    for name in names {
        let mut args = vec!["create", name];
        args.extend_from_slice(limits);
        d.ok(&args);
        d.ok(&["start", name]);
    }
}

/// Open `path` for writing, as whoever runs this.
fn write(path: PathBuf, text: &'static str) -> impl Fn() -> io::Result<()> {
    move || {
        use io::Write as _;
        fs::OpenOptions::new()
            .write(true)
            .open(&path)?
            .write_all(text.as_bytes())
    }
}

fn refused(r: io::Result<()>, what: &str) {
    let e = r.expect_err(what);
    assert!(
        matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)),
        "{what}: {e}"
    );
}

#[test]
fn vps_root_runs_its_own_cgroup_tree() -> anyhow::Result<()> {
    let d = Daemon::start("dlg-tree")?;
    running(&d, &["a"], &[]);
    // Its cgroup is the root of what it sees, and writable where it must be.
    assert_eq!(d.sh_ok("a", "grep ^0:: /proc/self/cgroup"), "0::/");
    let moved = d.sh_ok(
        "a",
        "mkdir /sys/fs/cgroup/work && echo $$ > /sys/fs/cgroup/work/cgroup.procs \
         && grep ^0:: /proc/self/cgroup",
    );
    assert_eq!(moved, "0::/work");
    // On the host that child is inside the VPS's cgroup.
    assert!(d.vps_cgroup("a").join("work").is_dir());
    // The layout systemd makes: every process into a leaf, then the
    // controllers the VPS has enabled for its children. Each exec joins
    // the cgroup of PID 1, which is then that leaf.
    d.sh_ok(
        "a",
        "mkdir /sys/fs/cgroup/init.scope && \
         for p in $(cat /sys/fs/cgroup/cgroup.procs); do \
           echo $p > /sys/fs/cgroup/init.scope/cgroup.procs 2>/dev/null; done; true",
    );
    d.sh_ok(
        "a",
        "for c in $(cat /sys/fs/cgroup/cgroup.controllers); do \
           echo +$c > /sys/fs/cgroup/cgroup.subtree_control || exit 1; done",
    );
    assert_eq!(
        d.sh_ok("a", "grep ^0:: /proc/self/cgroup"),
        "0::/init.scope"
    );
    // Bounded: no tree deeper than the host allows.
    let deep = d.sh(
        "a",
        "cd /sys/fs/cgroup && for i in $(seq 40); do mkdir d && cd d || exit 1; done",
    );
    assert!(!deep.status.success(), "a 40-deep tree was made");
    let cgroup = d.vps_cgroup("a");
    d.ok(&["stop", "a"]);
    assert!(!cgroup.exists(), "its own cgroups go with it");
    Ok(())
}

#[test]
fn vps_root_cannot_raise_its_limits() -> anyhow::Result<()> {
    let d = Daemon::start("dlg-limits")?;
    running(&d, &["a"], &["--memory", "64M", "--pids", "50"]);
    // From inside: the limit files of its own cgroup are the host's (on
    // the hybrid host the limits are in v1, not even visible).
    for file in [
        "pids.max",
        "memory.max",
        "memory.swap.max",
        "cgroup.max.depth",
    ] {
        let out = d.sh("a", &format!("echo max > /sys/fs/cgroup/{file}"));
        assert!(!out.status.success(), "{file} was writable inside");
        let out = d.sh("a", &format!("chmod 666 /sys/fs/cgroup/{file}"));
        assert!(!out.status.success(), "{file} could be chmod'ed inside");
    }
    // As its root holding the host's files (as if it reached them).
    for (controller, v2, v1) in [
        ("pids", "pids.max", "pids.max"),
        ("memory", "memory.max", "memory.limit_in_bytes"),
    ] {
        let Some(parent) = d.controller_parent(controller) else {
            continue;
        };
        let file = if parent == d.cgroup.path {
            d.vps_cgroup("a").join(v2)
        } else {
            parent.join("a").join(v1)
        };
        let what = format!("{} as VPS root", file.display());
        refused(d.as_vps_root("a", write(file, "max")), &what);
    }
    assert_eq!(d.cgroup_file("pids", "a", "pids.max").trim(), "50");
    Ok(())
}

#[test]
fn vps_root_cannot_move_a_process_out_or_see_its_neighbours() -> anyhow::Result<()> {
    let d = Daemon::start("dlg-out")?;
    running(&d, &["a", "b"], &[]);
    d.sh_ok("b", "mkdir /sys/fs/cgroup/marker-of-b");
    // Up from its cgroup2 mount is sysfs, not the parent cgroup.
    let out = d.sh("a", "echo $$ > /sys/fs/cgroup/../cgroup.procs");
    assert!(!out.status.success());
    // A cgroup2 mount of its own shows its cgroup again, nothing above.
    let seen = d.sh_ok(
        "a",
        "mkdir /sys/fs/cgroup/marker-of-a && mkdir -p /tmp/cg && mount -t cgroup2 none /tmp/cg && \
         echo $$ > /tmp/cg/cgroup.procs && ls /tmp/cg && grep ^0:: /proc/self/cgroup && \
         find /sys/fs/cgroup /tmp/cg -name 'marker-*' -o -name 'vz-*'",
    );
    assert!(seen.lines().any(|l| l == "0::/"), "{seen}");
    assert!(seen.contains("/tmp/cg/marker-of-a"), "{seen}");
    assert!(
        !seen.contains("marker-of-b") && !seen.contains("vz-"),
        "{seen}"
    );
    // What is above, even reached with host paths, is not its to write.
    let parent = d.cgroup.path.clone();
    for target in [parent, d.vps_cgroup("b")] {
        refused(
            d.as_vps_root("a", write(target.join("cgroup.procs"), "0")),
            &format!("moving into {}", target.display()),
        );
    }
    Ok(())
}
