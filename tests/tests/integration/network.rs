//! VPS networking: own addresses on the bridge, reachability between VPSs
//! and from the host, teardown, bad input. The daemon always runs in a
//! network namespace the test made, so nothing reaches a real interface.
use vzhost_tests::{Daemon, stderr};

fn ip_of(d: &Daemon, vps: &str) -> String {
    let v = d.status(vps).unwrap();
    v["ip"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

fn two_networked(d: &Daemon) -> (String, String) {
    d.ok(&["create", "a", "--ip", "10.213.0.10/16"]);
    d.ok(&["create", "b"]);
    d.ok(&["start", "a"]);
    d.ok(&["start", "b"]);
    (ip_of(d, "a"), ip_of(d, "b"))
}

#[test]
fn vps_reach_each_other_and_the_host_by_address() -> anyhow::Result<()> {
    let d = Daemon::start("net")?;
    let (a, b) = two_networked(&d);
    assert_eq!(a, "10.213.0.10");
    assert_eq!(b, "10.213.0.2", "the first free address");
    let list = d.ok(&["list"]);
    assert!(
        list.contains("10.213.0.10/16") && list.contains("10.213.0.2/16"),
        "{list}"
    );
    assert!(
        d.sh_ok("a", "ip -4 addr show eth0")
            .contains("10.213.0.10/16")
    );
    assert!(d.sh_ok("a", "ip route").contains("default via 10.213.0.1"));
    assert!(d.sh_ok("a", "cat /etc/hosts").contains("10.213.0.10 a"));
    d.sh_ok("a", &format!("ping -c 1 -W 5 {b}"));
    d.sh_ok("a", "ping -c 1 -W 5 10.213.0.1");
    // A TCP server in a, reached from b and from the host.
    d.sh_ok(
        "a",
        "(while true; do echo hello-from-a | nc -l -p 7000; done) >/dev/null 2>&1 &",
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        d.sh_ok("b", &format!("nc {a} 7000 </dev/null")),
        "hello-from-a"
    );
    let host = d.host_run(&["/bin/busybox", "nc", &a, "7000"])?;
    assert_eq!(
        String::from_utf8_lossy(&host.stdout).trim(),
        "hello-from-a",
        "{}",
        stderr(&host)
    );
    Ok(())
}

#[test]
fn stop_and_destroy_leave_no_veth_behind() -> anyhow::Result<()> {
    let d = Daemon::start("netdown")?;
    two_networked(&d);
    let links = |d: &Daemon| {
        let out = d.host_run(&["/bin/busybox", "ip", "-o", "link"]).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = links(&d);
    assert!(
        before.contains("vzh1") && before.contains("vzh2") && before.contains("vzbr0"),
        "{before}"
    );
    d.ok(&["stop", "a"]);
    assert!(!links(&d).contains("vzh1"), "a's veth is gone after stop");
    d.ok(&["start", "a"]);
    assert_eq!(
        ip_of(&d, "a"),
        "10.213.0.10",
        "the address survives a restart"
    );
    d.ok(&["destroy", "--force", "a"]);
    let after = links(&d);
    assert!(!after.contains("vzh1") && after.contains("vzh2"), "{after}");
    // The freed address can be given out again.
    d.ok(&["create", "c", "--ip", "10.213.0.10"]);
    Ok(())
}

#[test]
fn bad_network_input_is_refused() -> anyhow::Result<()> {
    let d = Daemon::start("netbad")?;
    d.ok(&["create", "a", "--ip", "10.213.0.10/16"]);
    for (ip, want) in [
        ("10.99.0.5/16", "outside the VPS subnet"),
        ("10.213.0.10/16", "already used by VPS a"),
        ("10.213.0.1", "gateway"),
        ("10.213.0.999/16", "not an IPv4 address"),
        ("10.213.0.7/64", "prefix"),
    ] {
        let err = d.fails(&["create", "x", "--ip", ip]);
        assert!(err.contains(want), "{ip}: {err}");
    }
    assert_eq!(d.list().len(), 1, "nothing created");
    // A bridge name taken by a link that is not a bridge.
    let bad = Daemon::start_with("netlo", &std::env::temp_dir(), &["--bridge", "lo"]);
    let err = bad
        .err()
        .expect("a daemon on --bridge lo must refuse to start")
        .to_string();
    assert!(err.contains("lo exists but is not a bridge"), "{err}");
    Ok(())
}
