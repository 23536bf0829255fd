//! The hierarchy and per-VPS cgroups on temporary directories laid out as
//! a hybrid and as a pure v2 host (see `fixture`): where each controller's
//! cgroup goes, what `apply` writes on each version, what the accounting
//! reads, how a daemon's names keep clear of another's, and how `kill_all`
//! falls back when the kernel has no cgroup.kill.
use std::fs;

use super::{
    fixture::{Host, contents, daemon, files},
    manager::{DAEMON_LEAF, ManagerError},
};
use crate::{
    model::Limits,
    sys::{
        Call,
        fake::{self, Fake},
    },
};

fn limits(memory: u64, cpus: f64, pids: u64) -> Limits {
    Limits {
        memory: Some(memory),
        cpus: Some(cpus),
        pids: Some(pids),
        disk: None,
    }
}

const V2_DEFAULTS: &[(&str, &str)] = &[("cpu.max", "max 100000\n"), ("memory.swap.max", "max\n")];

#[test]
fn hybrid_host_places_each_controller_in_the_daemons_own_v1_directory() {
    let host = Host::hybrid();
    let id = daemon("one");
    let h = host.hierarchy(&id);
    assert_eq!(h.vps_level(), 3);
    let vps = h.vps("web");
    assert_eq!(vps.v2_path(), host.v2_parent().join(format!("vz-{id}-web")));
    assert_eq!(
        vps.procs_files(),
        [
            vps.v2_path().to_owned(),
            host.cgroup("memory", &format!("system.slice/box/vz-{id}/web")),
            host.cgroup("cpu,cpuacct", &format!("vz-{id}/web")),
            host.cgroup("pids", &format!("vz-{id}/web")),
        ]
        .map(|d| d.join("cgroup.procs"))
    );
}

#[test]
fn prepare_on_hybrid_makes_the_v1_parents_and_leaves_v2_alone() {
    let host = Host::hybrid();
    let id = daemon("one");
    host.hierarchy(&id).prepare().unwrap();
    for (mount, own) in [("memory", "system.slice/box"), ("pids", "")] {
        assert!(host.cgroup(mount, own).join(format!("vz-{id}")).is_dir());
    }
    // No v2 controller to enable: the daemon stays where it was started.
    assert!(!host.v2_parent().join(DAEMON_LEAF).exists());
    assert!(!host.v2_parent().join("cgroup.subtree_control").exists());
}

#[test]
fn prepare_on_pure_v2_moves_into_the_leaf_then_enables_controllers() {
    let host = Host::pure_v2("cpuset cpu io memory pids");
    host.hierarchy(&daemon("one")).prepare().unwrap();
    assert_eq!(
        contents(&host.v2_parent().join(DAEMON_LEAF).join("cgroup.procs")),
        "0"
    );
    assert_eq!(
        contents(&host.v2_parent().join("cgroup.subtree_control")),
        "+memory +cpu +pids"
    );
}

#[test]
fn a_daemon_restarted_in_its_leaf_serves_the_same_subtree() {
    let host = Host::pure_v2("memory cpu pids");
    let id = daemon("one");
    let first = host.hierarchy(&id);
    host.set_membership(&format!("0::/tests/daemon/{DAEMON_LEAF}\n"));
    let again = host.hierarchy(&id);
    assert_eq!(again.v2_parent(), first.v2_parent());
    assert_eq!(again.vps_level(), first.vps_level());
    assert_eq!(again.vps("a").v2_path(), first.vps("a").v2_path());
}

#[test]
fn apply_on_v2_writes_memory_swap_cpu_and_pids() {
    let host = Host::pure_v2("memory cpu pids");
    let vps = host.hierarchy(&daemon("one")).vps("a");
    vps.create().unwrap();
    let dir = vps.v2_path();
    files(dir, V2_DEFAULTS);
    vps.apply(&limits(512 << 20, 1.5, 64)).unwrap();
    assert_eq!(contents(&dir.join("memory.max")), "536870912");
    assert_eq!(contents(&dir.join("memory.swap.max")), "0");
    assert_eq!(contents(&dir.join("cpu.max")), "150000 100000");
    assert_eq!(contents(&dir.join("pids.max")), "64");

    vps.apply(&Limits::default()).unwrap();
    assert_eq!(contents(&dir.join("memory.max")), "max");
    assert_eq!(contents(&dir.join("memory.swap.max")), "max");
    assert_eq!(contents(&dir.join("cpu.max")), "max 100000");
    assert_eq!(contents(&dir.join("pids.max")), "max");
}

#[test]
fn apply_on_v2_without_swap_accounting_sets_memory_only() {
    let host = Host::pure_v2("memory cpu pids");
    let vps = host.hierarchy(&daemon("one")).vps("a");
    vps.create().unwrap();
    files(vps.v2_path(), &[("cpu.max", "max 100000\n")]);
    vps.apply(&limits(1 << 30, 0.0001, 10)).unwrap();
    assert!(!vps.v2_path().join("memory.swap.max").exists());
    // The kernel refuses quotas under 1 ms: the smallest is used.
    assert_eq!(contents(&vps.v2_path().join("cpu.max")), "1000 100000");
}

#[test]
fn apply_on_hybrid_writes_the_v1_files() {
    let host = Host::hybrid();
    let id = daemon("one");
    let h = host.hierarchy(&id);
    h.prepare().unwrap();
    let vps = h.vps("a");
    vps.create().unwrap();
    let mem = host.cgroup("memory", &format!("system.slice/box/vz-{id}/a"));
    let cpu = host.cgroup("cpu,cpuacct", &format!("vz-{id}/a"));
    let pids = host.cgroup("pids", &format!("vz-{id}/a"));
    files(
        &mem,
        &[("memory.memsw.limit_in_bytes", "9223372036854771712\n")],
    );
    vps.apply(&limits(256 << 20, 0.5, 32)).unwrap();
    assert_eq!(contents(&mem.join("memory.limit_in_bytes")), "268435456");
    assert_eq!(contents(&cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(contents(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(contents(&pids.join("pids.max")), "32");
    // memsw is left as the kernel made it (see `Version::set_memory`).
    assert_eq!(
        contents(&mem.join("memory.memsw.limit_in_bytes")),
        "9223372036854771712"
    );
    // Nothing of the limits lands in the v2 cgroup on this host.
    assert!(!vps.v2_path().join("memory.max").exists());

    vps.apply(&Limits::default()).unwrap();
    assert_eq!(contents(&mem.join("memory.limit_in_bytes")), "-1");
    assert_eq!(contents(&cpu.join("cpu.cfs_quota_us")), "-1");
    assert_eq!(contents(&pids.join("pids.max")), "max");
}

#[test]
fn a_limit_without_its_controller_is_refused() {
    let host = Host::pure_v2("memory cpu");
    let vps = host.hierarchy(&daemon("one")).vps("a");
    vps.create().unwrap();
    files(vps.v2_path(), V2_DEFAULTS);
    let err = vps
        .apply(&Limits {
            pids: Some(10),
            ..Limits::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            ManagerError::NoController {
                controller: "pids",
                ..
            }
        ),
        "{err}"
    );
    // Unlimited needs no controller.
    vps.apply(&Limits::default()).unwrap();
    assert!(!vps.v2_path().join("pids.max").exists());
}

#[test]
fn a_write_the_kernel_refuses_names_the_cgroup_and_limit() {
    let host = Host::pure_v2("memory cpu pids");
    let vps = host.hierarchy(&daemon("one")).vps("a");
    // Not created: every write fails.
    let err = vps.apply(&limits(1 << 20, 1.0, 5)).unwrap_err();
    assert!(
        matches!(&err, ManagerError::Controller { setting: "memory", path, .. }
            if path == &vps.v2_path().display().to_string()),
        "{err}"
    );
}

#[test]
fn accounting_reads_the_v2_files() {
    let host = Host::pure_v2("memory cpu pids");
    let vps = host.hierarchy(&daemon("one")).vps("a");
    files(
        vps.v2_path(),
        &[
            (
                "cpu.stat",
                "usage_usec 900\nuser_usec 700\nsystem_usec 200\n",
            ),
            ("memory.current", "1000\n"),
            ("memory.peak", "5000\n"),
            ("memory.max", "8192\n"),
            ("memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n"),
            ("pids.current", "3\n"),
            ("pids.peak", "7\n"),
            ("pids.max", "max\n"),
            ("pids.events", "max 9\n"),
        ],
    );
    let a = vps.accounting();
    assert_eq!((a.cpu_user_usec, a.cpu_system_usec), (700, 200));
    assert_eq!(
        (
            a.memory.held,
            a.memory.maxheld,
            a.memory.limit,
            a.memory.failcnt
        ),
        (1000, 5000, Some(8192), 4)
    );
    assert_eq!(
        (
            a.memory_events.max,
            a.memory_events.oom,
            a.memory_events.oom_kill
        ),
        (4, Some(2), 1)
    );
    assert_eq!(
        (
            a.processes.held,
            a.processes.maxheld,
            a.processes.limit,
            a.processes.failcnt
        ),
        (3, 7, None, 9)
    );
}

#[test]
fn accounting_reads_the_v1_files_on_hybrid() {
    let host = Host::hybrid();
    let id = daemon("one");
    let vps = host.hierarchy(&id).vps("a");
    // CPU time comes from the v2 cgroup's core cpu.stat on every host.
    files(
        vps.v2_path(),
        &[("cpu.stat", "user_usec 30\nsystem_usec 12\n")],
    );
    files(
        &host.cgroup("memory", &format!("system.slice/box/vz-{id}/a")),
        &[
            ("memory.usage_in_bytes", "2000\n"),
            ("memory.max_usage_in_bytes", "3000\n"),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.failcnt", "6\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
            ),
        ],
    );
    files(
        &host.cgroup("pids", &format!("vz-{id}/a")),
        &[
            ("pids.current", "4\n"),
            ("pids.max", "50\n"),
            ("pids.events", "max 1\n"),
        ],
    );
    let a = vps.accounting();
    assert_eq!((a.cpu_user_usec, a.cpu_system_usec), (30, 12));
    // v1's "no limit" is a huge number: reported as unlimited.
    assert_eq!(
        (
            a.memory.held,
            a.memory.maxheld,
            a.memory.limit,
            a.memory.failcnt
        ),
        (2000, 3000, None, 6)
    );
    assert_eq!(
        (
            a.memory_events.max,
            a.memory_events.oom,
            a.memory_events.oom_kill
        ),
        (6, None, 3)
    );
    // No pids.peak before Linux 6.5: the current count is the peak seen.
    assert_eq!(
        (
            a.processes.held,
            a.processes.maxheld,
            a.processes.limit,
            a.processes.failcnt
        ),
        (4, 4, Some(50), 1)
    );
}

#[test]
fn two_daemons_in_one_cgroup_keep_to_their_own_vps_cgroups() {
    for host in [Host::hybrid(), Host::pure_v2("memory cpu pids")] {
        let (one, two) = (
            host.hierarchy(&daemon("one")),
            host.hierarchy(&daemon("two")),
        );
        one.prepare().unwrap();
        two.prepare().unwrap();
        let (a1, a2) = (one.vps("a"), two.vps("a"));
        let (f1, f2) = (a1.procs_files(), a2.procs_files());
        assert!(f1.iter().all(|f| !f2.contains(f)), "{f1:?} vs {f2:?}");
        a1.create().unwrap();
        a2.create().unwrap();
        // The other daemon's destroy of its own "a" leaves this one's.
        a2.remove().unwrap();
        assert!(f1.iter().all(|f| f.parent().unwrap().is_dir()));
        assert!(f2.iter().all(|f| !f.parent().unwrap().exists()));
    }
}

#[test]
fn pids_walks_the_whole_vps_subtree() {
    let host = Host::pure_v2("memory cpu pids");
    let vps = host.hierarchy(&daemon("one")).vps("a");
    files(vps.v2_path(), &[("cgroup.procs", "10\n11\n")]);
    files(
        &vps.v2_path().join("init.scope"),
        &[("cgroup.procs", "12\n")],
    );
    let mut pids = vps.pids();
    pids.sort_unstable();
    assert_eq!(pids, [10, 11, 12]);
}

#[test]
fn nproc_counts_tasks_from_the_pids_controller_or_walks_without_it() {
    let with = Host::pure_v2("memory cpu pids");
    let vps = with.hierarchy(&daemon("one")).vps("a");
    // Two processes, one with a second thread: three tasks.
    files(
        vps.v2_path(),
        &[("cgroup.procs", "10\n11\n"), ("pids.current", "3\n")],
    );
    assert_eq!(vps.usage().nproc, 3);
    let without = Host::pure_v2("memory cpu");
    let vps = without.hierarchy(&daemon("one")).vps("a");
    files(vps.v2_path(), &[("cgroup.procs", "10\n11\n")]);
    assert_eq!(vps.usage().nproc, 2);
}

#[test]
fn remove_deletes_child_cgroups_then_the_vps_cgroups() {
    let host = Host::hybrid();
    let h = host.hierarchy(&daemon("one"));
    h.prepare().unwrap();
    let vps = h.vps("a");
    vps.create().unwrap();
    fs::create_dir_all(vps.v2_path().join("init.scope/sub")).unwrap();
    vps.remove().unwrap();
    for f in vps.procs_files() {
        assert!(!f.parent().unwrap().exists(), "{}", f.display());
    }
    vps.remove().expect("removing what is gone is not an error");
}

#[test]
fn kill_all_uses_cgroup_kill_when_the_kernel_has_it() {
    let host = Host::pure_v2("memory cpu pids");
    let vps = host.hierarchy(&daemon("one")).vps("a");
    let procs = vps.v2_path().join("cgroup.procs");
    files(vps.v2_path(), &[("cgroup.procs", "11\n12\n")]);
    let fake = Fake::install(move |call| match call {
        Call::CgroupKill { .. } => {
            fs::write(&procs, "").unwrap();
            fake::ok()
        }
        _ => fake::fail(libc::EPERM),
    });
    vps.kill_all();
    assert_eq!(
        fake.calls(),
        [Call::CgroupKill {
            path: vps.v2_path().display().to_string()
        }]
    );
}

#[test]
fn kill_all_falls_back_to_one_sigkill_per_process_without_cgroup_kill() {
    let host = Host::pure_v2("memory cpu pids");
    let vps = host.hierarchy(&daemon("one")).vps("a");
    let procs = vps.v2_path().join("cgroup.procs");
    files(vps.v2_path(), &[("cgroup.procs", "11\n12\n")]);
    let mut kills = 0;
    let fake = Fake::install(move |call| match call {
        Call::CgroupKill { .. } => fake::fail(libc::ENOENT),
        Call::Kill { .. } => {
            // The processes go only in the second round.
            kills += 1;
            if kills == 4 {
                fs::write(&procs, "").unwrap();
            }
            fake::ok()
        }
        _ => fake::fail(libc::EPERM),
    });
    vps.kill_all();
    let kill = |pid| Call::Kill {
        pid,
        signal: libc::SIGKILL,
    };
    // cgroup.kill is tried once, not again in the second round.
    assert_eq!(
        fake.calls(),
        [
            Call::CgroupKill {
                path: vps.v2_path().display().to_string()
            },
            kill(11),
            kill(12),
            kill(11),
            kill(12),
        ]
    );
}

#[test]
fn depth_counts_components() {
    assert_eq!(super::depth("/"), 0);
    assert_eq!(super::depth("/a"), 1);
    assert_eq!(super::depth("/a/b/"), 2);
}

#[test]
fn membership_comes_from_the_given_procfs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("42")).unwrap();
    std::fs::write(dir.path().join("42/cgroup"), "1:pids:/p\n0::/a/b\n").unwrap();
    let proc = super::Procfs::at(dir.path());
    assert_eq!(proc.membership(Some(42)).unwrap().v2, "/a/b");
    std::fs::write(dir.path().join("42/cgroup"), "1:pids:/p\n").unwrap();
    let err = proc.membership(Some(42)).unwrap_err();
    assert!(
        matches!(&err, super::CgroupError::NoV2Membership { path } if path.ends_with("42/cgroup")),
        "{err}"
    );
    assert!(matches!(
        proc.membership(None),
        Err(super::CgroupError::Read { .. })
    ));
}
