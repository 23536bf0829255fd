//! Operations on one VPS run one at a time; nothing else waits for them.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use vzhost_tests::{Daemon, vzhost_bin};

/// An init that ignores SIGTERM: a signal from outside its PID namespace
/// reaches PID 1 only if it handles it, and sleep does not.
const STUBBORN_INIT: &str = "#!/bin/sh\nexec sleep 100000\n";

fn vz_spawn(d: &Daemon, args: &[&str]) -> std::process::Child {
    Command::new(vzhost_bin())
        .args(args)
        .env("VZHOST_SOCKET", d.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vzhost")
}

#[test]
fn a_slow_stop_holds_up_neither_list_nor_other_vpss() -> anyhow::Result<()> {
    let d = Daemon::start("conc-stop")?;
    d.template_with_init("stubborn", STUBBORN_INIT)?;
    d.ok(&[
        "create",
        "slow",
        "--template",
        "stubborn",
        "--stop-timeout",
        "10",
    ]);
    d.ok(&["create", "b"]);
    d.ok(&["start", "slow"]);
    d.ok(&["start", "b"]);
    let mut stopping = vz_spawn(&d, &["stop", "slow"]);
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let list = d.list();
    let took = t.elapsed();
    // Waiting for the stop would take the rest of its 10 s.
    assert!(
        took < Duration::from_secs(5),
        "list waited {took:?} for another VPS's stop"
    );
    assert_eq!(list.len(), 2);
    // Done while the 20 s stop still runs: none of them waited for it.
    d.ok(&["stat", "b"]);
    d.sh_ok("b", "true");
    d.ok(&["restart", "b"]);
    assert!(
        stopping.try_wait()?.is_none(),
        "the stop must still be running, or this proved nothing"
    );
    let out = stopping.wait_with_output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d.status("slow").unwrap()["status"], "stopped");
    assert_eq!(d.status("b").unwrap()["status"], "running");
    Ok(())
}

#[test]
fn two_starts_of_one_vps_give_one_success_and_one_conflict() -> anyhow::Result<()> {
    let d = Daemon::start("conc-start")?;
    d.ok(&["create", "a"]);
    let starts = [vz_spawn(&d, &["start", "a"]), vz_spawn(&d, &["start", "a"])];
    let outs = starts.map(|c| c.wait_with_output().expect("wait for vzhost"));
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "exactly one start succeeds");
    let refused = outs.iter().find(|o| !o.status.success()).unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("already running"), "{err}");
    // One init, not two: PID 1 and nothing else named init.
    let inits = d
        .sh_ok("a", "ps -o pid,comm")
        .lines()
        .filter(|l| l.trim_end().ends_with(" init"))
        .count();
    assert_eq!(inits, 1);
    Ok(())
}
