//! Debian VPSs booting their own systemd as PID 1 (natively on the hybrid
//! host, in the VM on pure v2): the delegated cgroup2 tree it runs in,
//! exec while it runs, a stop on SIGRTMIN+3, `poweroff` and `reboot` from
//! inside, and a machine-id of each VPS's own.
use std::time::{Duration, Instant};

use vzhost_tests::{Daemon, debian_template, wait_for};

/// Import the prepared Debian template as "debian" and create `names`
/// from it (with addresses, as a hosting panel would).
fn debian(d: &Daemon, names: &[&str]) {
    let template = debian_template();
    d.ok(&["template", "import", "debian", template.to_str().unwrap()]);
    for name in names {
        d.ok(&["create", name, "--template", "debian", "--hostname", name]);
    }
}

/// `systemctl is-system-running --wait` in `vps`: its verdict and the
/// units that failed.
fn system_state(d: &Daemon, vps: &str) -> (String, String) {
    // systemctl needs systemd's private socket, made early in its boot.
    let mut state = String::new();
    wait_for(Duration::from_secs(60), || {
        let out = d.sh(vps, "systemctl is-system-running --wait");
        state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        !state.is_empty()
    });
    let failed = d.sh_ok(
        vps,
        "systemctl --failed --no-legend --plain | cut -d' ' -f1",
    );
    (state, failed)
}

/// What the VPS's console holds (systemd's boot messages).
fn console(d: &Daemon, vps: &str) -> String {
    std::fs::read_to_string(d.root().join("vps").join(vps).join("disk/console.log"))
        .unwrap_or_default()
}

/// Children of the daemon that ended and were never reaped.
fn zombies(d: &Daemon) -> Vec<String> {
    let pid = d.pid().expect("the daemon runs");
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .flatten()
        .flat_map(|t| {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            children
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|c| std::fs::read_to_string(format!("/proc/{c}/stat")).ok())
        .filter(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, r)| r.starts_with('Z'))
        })
        .collect()
}

#[test]
fn debian_boots_systemd_and_exec_works_while_it_runs() -> anyhow::Result<()> {
    let d = Daemon::start("sd-boot")?;
    debian(&d, &["deb"]);
    let started = Instant::now();
    d.ok(&["start", "deb"]);
    assert_eq!(d.sh_ok("deb", "cat /proc/1/comm"), "systemd");
    let (state, failed) = system_state(&d, "deb");
    println!(
        "systemd reached {state:?} {:?} after start; failed units: {failed:?}",
        started.elapsed()
    );
    assert!(
        state == "running" || state == "degraded",
        "systemd is {state:?}; failed units: {failed}\nconsole:\n{}",
        console(&d, "deb")
    );
    assert_eq!(d.sh_ok("deb", "cat /run/systemd/container"), "vzhost");
    // systemd runs its tree in the delegated cgroup, which it sees as /.
    assert_eq!(d.sh_ok("deb", "grep ^0:: /proc/1/cgroup"), "0::/init.scope");
    assert!(d.sh_ok("deb", "ls /sys/fs/cgroup").contains("system.slice"));
    // exec (and with it enter and passwd) joins a leaf: PID 1's.
    assert_eq!(
        d.sh_ok("deb", "grep ^0:: /proc/self/cgroup"),
        "0::/init.scope"
    );
    assert_eq!(d.sh_ok("deb", "hostname"), "deb");
    let stat: serde_json::Value = serde_json::from_str(&d.ok(&["stat", "deb", "-o", "json"]))?;
    println!(
        "a booted Debian VPS holds {} bytes of memory and {} processes",
        stat[0]["accounting"]["memory"]["held"], stat[0]["accounting"]["processes"]["held"]
    );
    Ok(())
}

#[test]
fn stop_of_a_systemd_vps_is_clean_and_quick() -> anyhow::Result<()> {
    let d = Daemon::start("sd-stop")?;
    debian(&d, &["deb"]);
    d.ok(&["start", "deb"]);
    system_state(&d, "deb");
    let cgroup = d.vps_cgroup("deb");
    let started = Instant::now();
    d.ok(&["stop", "deb"]);
    let took = started.elapsed();
    println!("stop of a booted systemd VPS took {took:?}");
    // Under the VM's emulation everything is some ten times slower; there
    // the clean halt (no SIGKILL after the timeout) is what counts.
    let limit = Duration::from_secs(if vzhost_tests::in_vm() { 30 } else { 5 });
    assert!(took < limit, "stop took {took:?}");
    assert!(!d.log().contains("killing"), "{}", d.log());
    assert!(!cgroup.exists());
    // And it starts again.
    d.ok(&["start", "deb"]);
    assert_eq!(d.sh_ok("deb", "cat /proc/1/comm"), "systemd");
    Ok(())
}

#[test]
fn poweroff_inside_leaves_it_stopped_and_clean_and_reboot_brings_it_back() -> anyhow::Result<()> {
    let d = Daemon::start("sd-power")?;
    debian(&d, &["deb", "next"]);
    d.ok(&["start", "deb"]);
    d.ok(&["start", "next"]);
    system_state(&d, "deb");
    let neighbour = d.init_pid("next");

    // reboot: a new init, running again.
    let first = d.init_pid("deb").expect("runs");
    let asked = Instant::now();
    let _ = d.sh("deb", "systemctl reboot");
    let back = wait_for(Duration::from_secs(30), || {
        d.init_pid("deb").is_some_and(|p| p != first)
    });
    println!("a reboot inside took {:?} to a new init", asked.elapsed());
    assert!(
        back,
        "not back after reboot: {:?}\n{}",
        d.status("deb"),
        d.log()
    );
    assert!(wait_for(Duration::from_secs(10), || d
        .sh("deb", "test \"$(cat /proc/1/comm)\" = systemd")
        .status
        .success()));
    assert_eq!(d.init_pid("next"), neighbour, "the neighbour kept running");

    // poweroff: stopped, cgroup and veth gone, and it starts again.
    system_state(&d, "deb");
    let cgroup = d.vps_cgroup("deb");
    let _ = d.sh("deb", "systemctl poweroff");
    let stopped = wait_for(Duration::from_secs(30), || {
        d.status("deb").is_some_and(|s| s["status"] == "stopped") && !cgroup.exists()
    });
    assert!(stopped, "{:?}\n{}", d.status("deb"), d.log());
    assert_eq!(d.status("deb").unwrap()["last_exit"]["how"], "poweroff");
    let veth = d.veth(1);
    let link = d.host_run(&["ip", "link", "show", &veth])?;
    assert!(!link.status.success(), "{veth} is left behind");
    assert!(
        wait_for(Duration::from_secs(5), || zombies(&d).is_empty()),
        "the daemon left zombies: {:?}",
        zombies(&d)
    );
    d.ok(&["start", "deb"]);
    assert_eq!(d.sh_ok("deb", "cat /proc/1/comm"), "systemd");
    assert_eq!(d.init_pid("next"), neighbour, "the neighbour kept running");
    Ok(())
}

#[test]
fn two_debian_vpss_have_their_own_machine_ids() -> anyhow::Result<()> {
    let d = Daemon::start("sd-ids")?;
    debian(&d, &["one", "two"]);
    d.ok(&["start", "one"]);
    d.ok(&["start", "two"]);
    let id = |vps| d.sh_ok(vps, "cat /etc/machine-id");
    let (one, two) = (id("one"), id("two"));
    assert_eq!(one.len(), 32, "{one:?}");
    assert!(one.chars().all(|c| c.is_ascii_hexdigit()), "{one:?}");
    assert_ne!(one, two);
    // The same across a restart.
    d.ok(&["restart", "one"]);
    assert_eq!(id("one"), one);
    Ok(())
}
