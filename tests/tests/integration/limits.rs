//! One VPS cannot bring the host or a neighbour down: its pids, memory and
//! CPU limits hold, and changing them with `set` works live.
use std::time::{Duration, Instant};

use vzhost_tests::Daemon;

/// The value of `key` in a flat keyed file like memory.events or cpu.stat.
fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn fork_bomb_stops_at_the_pids_limit_and_the_neighbour_still_forks() -> anyhow::Result<()> {
    let d = Daemon::start("pids")?;
    d.ok(&["create", "a", "--pids", "20"]);
    d.ok(&["create", "b"]);
    d.ok(&["start", "a"]);
    d.ok(&["start", "b"]);
    let _ = d.sh(
        "a",
        "i=0; while [ $i -lt 100 ]; do sleep 120 >/dev/null 2>&1 & i=$((i+1)); done 2>/dev/null; true",
    );
    let current: u64 = d.cgroup_file("pids", "a", "pids.current").trim().parse()?;
    assert!(current <= 20, "a holds {current} tasks, above its limit");
    assert!(
        current >= 15,
        "the bomb really ran into the limit ({current})"
    );
    assert!(
        keyed(&d.cgroup_file("pids", "a", "pids.events"), "max") > 0,
        "the limit was hit"
    );
    assert_eq!(
        d.sh_ok("b", "sh -c 'echo forked'"),
        "forked",
        "b can still start processes"
    );
    Ok(())
}

#[test]
fn memory_hog_is_oom_killed_inside_its_vps_only() -> anyhow::Result<()> {
    let d = Daemon::start("mem")?;
    d.ok(&["create", "a", "--memory", "64M"]);
    d.ok(&["create", "b"]);
    d.ok(&["start", "a"]);
    d.ok(&["start", "b"]);
    d.sh_ok("b", "sleep 300 >/dev/null 2>&1 &");
    let b_sleep = d.sh_ok("b", "pidof sleep");
    // tail keeps the whole "line" of /dev/zero in memory, forever growing.
    let out = d.sh("a", "tail /dev/zero");
    assert_eq!(
        out.status.code(),
        Some(137),
        "the hog is SIGKILLed by the OOM killer"
    );
    let events = if d
        .controller_parent("memory")
        .is_some_and(|p| p == d.cgroup.path)
    {
        d.cgroup_file("memory", "a", "memory.events")
    } else {
        d.cgroup_file("memory", "a", "memory.oom_control")
    };
    assert!(
        keyed(&events, "oom_kill") >= 1,
        "OOM kill recorded in a's cgroup: {events}"
    );
    assert_eq!(
        d.sh_ok("a", "echo still-up"),
        "still-up",
        "a itself keeps running"
    );
    assert_eq!(
        d.sh_ok("b", "pidof sleep"),
        b_sleep,
        "b's process untouched"
    );
    Ok(())
}

#[test]
fn cpu_hog_is_held_to_its_quota() -> anyhow::Result<()> {
    let d = Daemon::start("cpu")?;
    d.ok(&["create", "a", "--cpus", "0.2"]);
    d.ok(&["create", "b"]);
    d.ok(&["start", "a"]);
    d.ok(&["start", "b"]);
    let started = Instant::now();
    let hog = std::thread::spawn({
        let socket = d.socket();
        move || {
            std::process::Command::new(vzhost_tests::vzhost_bin())
                .args([
                    "exec",
                    "a",
                    "--",
                    "timeout",
                    "3",
                    "sh",
                    "-c",
                    "while :; do :; done",
                ])
                .env("VZHOST_SOCKET", socket)
                .output()
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        d.sh_ok("b", "echo responsive"),
        "responsive",
        "b runs while a spins"
    );
    hog.join().expect("hog thread")?;
    let wall = started.elapsed().as_secs_f64();
    let stat = d.cgroup_file("cpu", "a", "cpu.stat");
    assert!(keyed(&stat, "nr_throttled") > 0, "a was throttled: {stat}");
    // v2 also reports usage: at most the quota's share of the wall time.
    let usage_s = keyed(&stat, "usage_usec") as f64 / 1e6;
    if stat.contains("usage_usec") {
        assert!(
            usage_s <= 0.2 * wall * 1.5 + 0.2,
            "a used {usage_s:.2}s of CPU in {wall:.2}s at 0.2 CPUs"
        );
    }
    Ok(())
}

#[test]
fn set_changes_limits_live_and_keeps_them() -> anyhow::Result<()> {
    let d = Daemon::start("set")?;
    d.ok(&["create", "a", "--memory", "128M", "--pids", "100"]);
    d.ok(&["start", "a"]);
    d.ok(&[
        "set", "a", "--memory", "96M", "--pids", "50", "--cpus", "1.5",
    ]);
    let v2 = d
        .controller_parent("memory")
        .is_some_and(|p| p == d.cgroup.path);
    let mem = d.cgroup_file(
        "memory",
        "a",
        if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        },
    );
    assert_eq!(mem.trim(), (96u64 << 20).to_string());
    assert_eq!(d.cgroup_file("pids", "a", "pids.max").trim(), "50");
    let status = d.status("a").unwrap();
    assert_eq!(status["limits"]["memory"], 96u64 << 20);
    assert_eq!(status["limits"]["pids"], 50);
    // Kept across a restart.
    d.ok(&["restart", "a"]);
    assert_eq!(d.cgroup_file("pids", "a", "pids.max").trim(), "50");
    Ok(())
}
