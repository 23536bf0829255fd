//! Enforcement does not depend on the daemon's process: KSAL maps and
//! links are pinned on bpffs, so after `kill -9` of the daemon every VPS
//! stays confined, and a restarted daemon takes the pins over and cleans
//! up those of VPSs that went away meanwhile.
use std::{fs, io, time::Duration};

use vzhost_tests::Daemon;

const B: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 213, 0, 11);

fn connect_b() -> io::Result<()> {
    let addr = std::net::SocketAddr::from((B, 8080));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(|_| ())
}

fn read_secret(pid: u64) -> impl Fn() -> io::Result<()> + Send + Sync + 'static {
    move || fs::read(format!("/proc/{pid}/root/etc/secret")).map(|_| ())
}

/// Guard programs on VPS `vps`'s cgroup.
fn guards_of(d: &Daemon, vps: &str) -> usize {
    vzhost::ksal::guard_programs(&d.vps_cgroup(vps)).unwrap()
}

/// What is pinned: LSM links by hook.
fn pinned_lsm(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(d.pins().join("lsm"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// a's network rule (and file rule, where LSM runs) still hold.
fn confined(d: &Daemon, a_pid: u64, lsm: bool, when: &str) {
    denied(
        d.as_root_of("a", a_pid, connect_b),
        &format!("connect {when}"),
    );
    if lsm {
        denied(
            d.as_root_of("a", a_pid, read_secret(a_pid)),
            &format!("the file {when}"),
        );
    }
}

fn denied(r: io::Result<()>, what: &str) {
    let e = r.expect_err(&format!("{what}: allowed"));
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{what}: {e}");
}

#[test]
fn enforcement_survives_kill_9_of_the_daemon_and_is_taken_over() -> anyhow::Result<()> {
    let lsm = vzhost::ksal::probe_lsm().is_ok();
    let mut d = Daemon::start("pins")?;
    let mut policy = String::from(
        "selector:\n  names: [a]\nmode: enforce\nallow_degraded: true\nnetwork:\n  deny_egress:\n    - cidr: 10.213.0.11/32\n",
    );
    if lsm {
        policy += "files:\n  deny:\n    - path: /etc/secret\n";
    }
    d.put_policy("lockdown.yaml", &policy);
    d.ok(&["create", "a", "--ip", "10.213.0.10"]);
    d.ok(&["create", "b", "--ip", "10.213.0.11"]);
    d.ok(&["create", "c"]);
    d.ok(&["start", "b"]);
    d.sh_ok("b", "httpd -p 0.0.0.0:8080 -h /");
    d.ok(&["start", "c"]);
    d.ok(&["start", "a"]);
    if lsm {
        // File rules hold files that exist when the policy is applied.
        d.sh_ok("a", "echo s3cret >/etc/secret");
        d.ok(&["restart", "a"]);
    }
    let a_pid = d.status("a").unwrap()["init_pid"].as_u64().unwrap();
    let c_pid = d.status("c").unwrap()["init_pid"].as_u64().unwrap();
    denied(
        d.as_root_of("a", a_pid, connect_b),
        "connect with the daemon up",
    );
    d.as_root_of("c", c_pid, connect_b)
        .expect("c is not under the rule");
    assert_eq!(guards_of(&d, "a"), 10, "one program per guard hook");
    let lsm_pins = pinned_lsm(&d);
    if lsm {
        let lsm_hooks = ksal_common::HOOKS.iter().filter(|h| h.is_lsm()).count();
        assert_eq!(
            lsm_pins.len(),
            lsm_hooks,
            "a pinned link per LSM hook of the hook table: {lsm_pins:?}"
        );
    }
    assert!(
        fs::read_dir(d.pins().join("maps"))?.count() == 1,
        "the maps of one build are pinned"
    );

    d.kill9();
    // No daemon: the pinned programs and maps still hold a.
    confined(&d, a_pid, lsm, "with the daemon killed");
    d.as_root_of("c", c_pid, connect_b)
        .expect("c still reaches b");
    // c goes away while no daemon runs.
    // SAFETY: signalling a VPS init this test started.
    unsafe { libc::kill(c_pid as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));

    d.spawn()?;
    confined(&d, a_pid, lsm, "after the restart");
    let events = d.events("a");
    assert!(
        events
            .iter()
            .any(|e| e["hook"] == "connect" && e["verdict"] == "denied"),
        "the new daemon reads the pinned event ring: {events:?}"
    );
    assert_eq!(d.status("c").unwrap()["status"], "stopped");
    assert!(
        !d.vps_cgroup("c").exists(),
        "c's cgroup, and its guards with it, are gone"
    );
    assert_eq!(guards_of(&d, "a"), 10, "taken over, not doubled");
    assert_eq!(pinned_lsm(&d), lsm_pins, "LSM links replaced in place");
    // The rule is still the policy's: lifting it works as before.
    fs::remove_file(d.policies().join("lockdown.yaml"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while d.as_root_of("a", a_pid, connect_b).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the rule was never lifted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
