//! Operations on different VPSs run side by side; two on one VPS do not;
//! `stop --all` stops every running VPS, each given its clean shutdown.
use std::{
    process::{Child, Command, Output, Stdio},
    time::Instant,
};

use vzhost_tests::{Daemon, vzhost_bin};

fn spawn(d: &Daemon, args: &[&str]) -> Child {
    Command::new(vzhost_bin())
        .args(args)
        .env("VZHOST_SOCKET", d.socket())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vzhost")
}

/// Run every command at once; their outputs in the same order.
fn all_at_once(d: &Daemon, commands: &[Vec<String>]) -> Vec<Output> {
    let children: Vec<Child> = commands
        .iter()
        .map(|c| spawn(d, &c.iter().map(String::as_str).collect::<Vec<_>>()))
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait for vzhost"))
        .collect()
}

/// `vzhost start` of every VPS in `vpss`, all at once.
fn start_at_once(d: &Daemon, vpss: &[String]) -> Vec<Output> {
    let starts: Vec<Vec<String>> = vpss
        .iter()
        .map(|v| vec!["start".into(), v.clone()])
        .collect();
    all_at_once(d, &starts)
}

/// The first creates on a new daemon, run at once, each build the built-in
/// template: all of them succeed.
#[test]
fn the_first_creates_at_once_all_succeed() -> anyhow::Result<()> {
    let d = Daemon::start("par-create")?;
    let vpss = names(8);
    let creates: Vec<Vec<String>> = vpss
        .iter()
        .map(|v| vec!["create".into(), v.clone()])
        .collect();
    let outs = all_at_once(&d, &creates);
    for (v, out) in vpss.iter().zip(&outs) {
        assert!(out.status.success(), "create {v}: {out:?}");
    }
    assert_eq!(d.list().len(), 8);
    Ok(())
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("p{i}")).collect()
}

/// `vzhost stop --all -o json`, required to succeed: each VPS's result.
fn stop_all(d: &Daemon) -> Vec<serde_json::Value> {
    serde_json::from_str(&d.ok(&["stop", "--all", "-o", "json"])).expect("stop --all json")
}

#[test]
fn fifty_clients_each_start_their_own_vps_at_once() -> anyhow::Result<()> {
    let d = Daemon::start("par-start")?;
    let vpss = names(50);
    for v in &vpss {
        // Stopped at once at the end: this test is about starting.
        d.ok(&["create", v, "--stop-timeout", "0"]);
    }
    let t = Instant::now();
    let outs = start_at_once(&d, &vpss);
    let parallel = t.elapsed();
    for (v, out) in vpss.iter().zip(&outs) {
        assert!(
            out.status.success(),
            "start {v}: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log()
        );
    }
    let list = d.list();
    for v in &vpss {
        let s = list.iter().find(|s| s["name"] == v.as_str()).unwrap();
        assert_eq!(s["status"], "running", "{v}: {s}");
    }
    d.sh_ok("p49", "true");
    assert_eq!(stop_all(&d).len(), 50);
    let t = Instant::now();
    for v in &vpss {
        d.ok(&["start", v]);
    }
    let sequential = t.elapsed();
    // The comparison is the bench's to judge; this machine may be busy.
    println!("50 starts at once: {parallel:?}; one after another: {sequential:?}");
    assert_eq!(stop_all(&d).len(), 50);
    Ok(())
}

#[test]
fn two_clients_starting_one_vps_get_one_success_and_one_conflict() -> anyhow::Result<()> {
    let d = Daemon::start("par-same")?;
    d.ok(&["create", "same", "--stop-timeout", "0"]);
    // A few rounds: whichever client the daemon serves first wins.
    for _ in 0..3 {
        let start = vec!["start".to_owned(), "same".to_owned()];
        let outs = all_at_once(&d, &[start.clone(), start]);
        let won: Vec<&Output> = outs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(won.len(), 1, "exactly one start succeeds: {outs:?}");
        let lost = outs.iter().find(|o| !o.status.success()).unwrap();
        // 4: the documented exit code of a conflict.
        assert_eq!(lost.status.code(), Some(4), "{lost:?}");
        let err = String::from_utf8_lossy(&lost.stderr);
        assert!(err.contains("VPS same is already running"), "{err}");
        assert_eq!(d.status("same").unwrap()["status"], "running");
        d.ok(&["stop", "same"]);
    }
    Ok(())
}

/// An init that, on its stop signal (SIGTERM), leaves a mark in its root
/// and exits: the mark proves the clean shutdown came before any SIGKILL.
const MARKING_INIT: &str = "#!/bin/sh\n\
    trap 'echo term > /stopped-cleanly; exit 0' TERM\n\
    while :; do sleep 1 & wait $!; done\n";

#[test]
fn stop_all_stops_every_running_vps_each_with_its_stop_signal_first() -> anyhow::Result<()> {
    let d = Daemon::start("par-stopall")?;
    d.template_with_init("marking", MARKING_INIT)?;
    let vpss = names(30);
    for v in &vpss {
        d.ok(&["create", v, "--template", "marking", "--stop-timeout", "20"]);
    }
    d.ok(&["create", "idle"]);
    let outs = start_at_once(&d, &vpss);
    assert!(outs.iter().all(|o| o.status.success()), "{outs:?}");
    let results = stop_all(&d);
    // Only the running ones: `idle` was never started.
    let mut stopped: Vec<&str> = results
        .iter()
        .map(|r| {
            assert_eq!(r["result"], "stopped", "{r}");
            r["name"].as_str().unwrap()
        })
        .collect();
    stopped.sort_unstable();
    let mut expected: Vec<&str> = vpss.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(stopped, expected);
    let list = d.list();
    for v in &vpss {
        let s = list.iter().find(|s| s["name"] == v.as_str()).unwrap();
        assert_eq!(s["status"], "stopped", "{v}: {s}");
        assert!(!d.vps_cgroup(v).exists(), "the cgroup of {v} is left");
        let mark = d.root().join(format!("vps/{v}/disk/upper/stopped-cleanly"));
        assert_eq!(
            std::fs::read_to_string(&mark).unwrap_or_default(),
            "term\n",
            "{v}'s init got no SIGTERM before it ended"
        );
    }
    // Nothing running: nothing to do, and still a success.
    assert!(stop_all(&d).is_empty());
    Ok(())
}
