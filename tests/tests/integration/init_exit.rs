//! An init that ends by itself (busybox VPSs, natively and in the VM):
//! `reboot` inside starts the VPS again while its neighbour runs on,
//! `poweroff` inside leaves it stopped and cleaned up so the next start
//! works, and a VPS adopted after a daemon restart is cleaned up too.
use std::time::Duration;

use vzhost_tests::{Daemon, wait_for};

/// Stopped, its cgroup and veth gone, and how it ended as `how`.
fn stopped_and_clean(d: &Daemon, vps: &str, id: u32, how: &str) {
    let cgroup = d.vps_cgroup(vps);
    let done = wait_for(Duration::from_secs(30), || {
        d.status(vps).is_some_and(|s| s["status"] == "stopped") && !cgroup.exists()
    });
    assert!(done, "{:?}\n{}", d.status(vps), d.log());
    assert_eq!(d.status(vps).unwrap()["last_exit"]["how"], how);
    let veth = d.veth(id);
    let link = d.host_run(&["ip", "link", "show", &veth]).unwrap();
    assert!(!link.status.success(), "{veth} is left behind");
}

#[test]
fn reboot_inside_starts_it_again_and_poweroff_leaves_it_stopped() -> anyhow::Result<()> {
    let d = Daemon::start("exit-inside")?;
    for vps in ["a", "b"] {
        d.ok(&["create", vps]);
        d.ok(&["start", vps]);
    }
    let neighbour = d.init_pid("b");
    let first = d.init_pid("a").expect("runs");
    let mac = d.sh_ok("a", "cat /sys/class/net/eth0/address");
    let _ = d.sh("a", "reboot");
    let back = wait_for(Duration::from_secs(30), || {
        d.init_pid("a").is_some_and(|p| p != first)
    });
    assert!(back, "{:?}\n{}", d.status("a"), d.log());
    assert_eq!(d.status("a").unwrap()["last_exit"]["how"], "reboot");
    assert_eq!(d.sh_ok("a", "echo up"), "up");
    assert_eq!(d.init_pid("b"), neighbour, "the neighbour kept running");
    // The same MAC address after the reboot: no stale neighbour entries.
    assert_eq!(d.sh_ok("a", "cat /sys/class/net/eth0/address"), mac);

    let _ = d.sh("a", "poweroff");
    stopped_and_clean(&d, "a", 1, "poweroff");
    // Nothing of it is left to trip the next start (KSAL entries included).
    d.ok(&["start", "a"]);
    assert_eq!(d.sh_ok("a", "echo up"), "up");
    assert_eq!(d.init_pid("b"), neighbour, "the neighbour kept running");
    Ok(())
}

#[test]
fn an_adopted_vps_that_powers_off_is_cleaned_up() -> anyhow::Result<()> {
    let mut d = Daemon::start("exit-adopted")?;
    d.ok(&["create", "a"]);
    d.ok(&["start", "a"]);
    d.kill9();
    d.spawn()?;
    // Not this daemon's child: seen on its pidfd, taken as a poweroff.
    let _ = d.sh("a", "reboot");
    stopped_and_clean(&d, "a", 1, "unknown");
    d.ok(&["start", "a"]);
    assert_eq!(d.sh_ok("a", "echo up"), "up");
    Ok(())
}
