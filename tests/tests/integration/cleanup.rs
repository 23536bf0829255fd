//! What many VPSs leave behind once stopped and destroyed: nothing. Their
//! cgroups (both layouts), veths, routes, state and KSAL map entries are
//! all gone, so a host that runs thousands over months does not fill up.
use vzhost_tests::{Daemon, in_vm, ksal_map_entries};

vzhost_tests::net_test! {
fn vpss_stopped_and_destroyed_leave_nothing_behind() -> anyhow::Result<()> {
    let d = Daemon::start("cleanup")?;
    let n = if in_vm() { 6 } else { 20 };
    let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        d.ok(&["create", name, "--ip", &format!("10.213.1.{}", i + 10)]);
        d.ok(&["start", name]);
    }
    // Each VPS counted some traffic, and has its own entries in the maps.
    for name in &names {
        d.sh_ok(name, "ping -q -c 1 -W 2 10.213.0.1 >/dev/null");
    }
    let held: usize = ksal_map_entries(&d.pins()).iter().map(|(_, n)| n).sum();
    assert!(held >= n, "the maps hold the running VPSs: {held}");
    let veths: Vec<String> = (1..=n as u32).map(|id| d.veth(id)).collect();
    let links =
        || String::from_utf8_lossy(&d.host_run(&["ip", "-o", "link"]).unwrap().stdout).into_owned();
    assert!(
        veths.iter().all(|v| links().contains(v.as_str())),
        "{}",
        links()
    );
    let cgroups: Vec<_> = names.iter().map(|n| d.vps_cgroup(n)).collect();
    let v1: Vec<_> = ["memory", "pids", "cpu"]
        .iter()
        .filter_map(|c| d.controller_parent(c))
        .filter(|p| *p != d.vps_cgroup("x").parent().unwrap())
        .flat_map(|p| names.iter().map(move |n| p.join(n)))
        .collect();

    for name in &names {
        d.ok(&["stop", name]);
        d.ok(&["destroy", name]);
    }
    assert!(d.list().is_empty());
    let left = links();
    for v in &veths {
        assert!(!left.contains(v.as_str()), "{v} is left: {left}");
    }
    let routes = String::from_utf8_lossy(&d.host_run(&["ip", "route"])?.stdout).into_owned();
    assert!(!routes.contains("10.213.1."), "a route is left: {routes}");
    for dir in cgroups.iter().chain(&v1) {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    assert_eq!(
        std::fs::read_dir(d.root().join("vps"))?.count(),
        0,
        "state is left"
    );
    let entries = ksal_map_entries(&d.pins());
    assert!(
        entries.iter().all(|(_, n)| *n == 0),
        "map entries are left: {entries:?}"
    );
    Ok(())
}
}
