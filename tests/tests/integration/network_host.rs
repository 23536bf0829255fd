//! The host's own services, as a VPS sees them (issue 12: "VPSs reach
//! every host service bound to the wildcard address"): under the shipped
//! default (`deny_host: true`, `allow_host: [53, ping]`) a VPS reaches
//! none of the host's addresses but for DNS and ping, by socket (the
//! connect hook) or by any other way (the veth program), while the host
//! still reaches the VPS's services. Native and in the VM.
use std::time::Duration;

use vzhost_tests::{Daemon, stderr};

use crate::network::{ip_of, send_raw_udp};

const GATEWAY: &str = "10.213.0.1";
/// A second address of the daemon's network namespace, not on the bridge.
const OTHER: &str = "192.0.2.1";

/// Wait up to 2 s for one UDP datagram on `port` of the daemon's
/// network namespace (a thread of its own enters it); what arrived.
fn host_udp(d: &Daemon, port: u16) -> std::thread::JoinHandle<Vec<u8>> {
    let pid = d.pid().expect("the daemon runs");
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = std::net::UdpSocket::bind(("0.0.0.0", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 256];
        sock.recv(&mut buf)
            .map_or_else(|_| Vec::new(), |n| buf[..n].to_vec())
    })
}

vzhost_tests::net_test! {
fn a_vps_reaches_no_host_address_but_the_allowed_ports() -> anyhow::Result<()> {
    let d = Daemon::start("host-deny")?;
    for argv in [
        ["/bin/busybox", "ip", "link", "add", "hx0", "type", "veth"].as_slice(),
        [
            "/bin/busybox",
            "ip",
            "addr",
            "add",
            "192.0.2.1/24",
            "dev",
            "hx0",
        ]
        .as_slice(),
        ["/bin/busybox", "ip", "link", "set", "hx0", "up"].as_slice(),
    ] {
        let out = d.host_run(argv)?;
        assert!(out.status.success(), "{argv:?}: {}", stderr(&out));
    }
    d.ok(&["create", "a"]);
    d.ok(&["start", "a"]);
    let a = ip_of(&d, "a");
    // Host services on the wildcard address: 7500 (not allowed), 53 (allowed).
    let logs = d.state.path();
    let mut servers = Vec::new();
    for port in ["7500", "53"] {
        let log = logs.join(format!("host-{port}.log"));
        servers.push(d.host_spawn(&["/bin/busybox", "nc", "-l", "-p", port], &log)?);
        d.wait_listening(port.parse()?);
    }
    let refused = |ip: &str| {
        let out = d.sh("a", &format!("echo to-{ip} | nc -w 2 {ip} 7500"));
        stderr(&out).contains("not permitted")
    };
    let verdicts = [refused(GATEWAY), refused(OTHER)];
    // The allowed port: retried while the host's listener may still be
    // starting (a loaded machine), then given time to write what it got.
    let allowed_log = logs.join("host-53.log");
    let mut dns = d.sh("a", &format!("echo to-53 | nc -w 2 {GATEWAY} 53"));
    for _ in 0..50 {
        if std::fs::read_to_string(&allowed_log).is_ok_and(|t| t.contains("to-53")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if stderr(&dns).contains("refused") {
            dns = d.sh("a", &format!("echo to-53 | nc -w 2 {GATEWAY} 53"));
        }
    }
    d.sh_ok("a", &format!("ping -c 1 -W 2 {GATEWAY}"));
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    assert_eq!(
        verdicts,
        [true, true],
        "the gateway and the other host address"
    );
    assert!(!stderr(&dns).contains("not permitted"), "{}", stderr(&dns));
    let got = std::fs::read_to_string(logs.join("host-53.log"))?;
    assert!(
        got.contains("to-53"),
        "the allowed port is reached: {got:?}"
    );
    let got = std::fs::read_to_string(logs.join("host-7500.log"))?;
    assert!(got.is_empty(), "nothing reached 7500: {got:?}");
    let events = d.events("a");
    assert!(
        events
            .iter()
            .any(|e| e["hook"] == "connect" && e["rule"] == "default:network.deny_host"),
        "{events:?}"
    );
    // A raw datagram to a host UDP service meets no socket hook: the veth
    // program drops it.
    let control = host_udp(&d, 53);
    std::thread::sleep(Duration::from_millis(300));
    send_raw_udp(&d, "a", &a, GATEWAY, 53, b"raw-to-53");
    assert_eq!(control.join().unwrap(), b"raw-to-53", "the allowed port");
    let udp = host_udp(&d, 7600);
    std::thread::sleep(Duration::from_millis(300));
    send_raw_udp(&d, "a", &a, GATEWAY, 7600, b"raw-to-host");
    let got = udp.join().unwrap();
    assert!(got.is_empty(), "the raw datagram reached the host: {got:?}");
    assert!(
        d.await_event("a", "veth_egress")
            .is_some_and(|e| e["rule"] == "default:network.deny_host"),
        "{:?}",
        d.events("a")
    );
    // The host still opens connections to the VPS, and gets the replies.
    d.sh_ok(
        "a",
        "(while true; do echo hello-host | nc -l -p 7700; done) >/dev/null 2>&1 &",
    );
    std::thread::sleep(Duration::from_millis(300));
    let host = d.host_run(&["/bin/busybox", "nc", "-w", "2", &a, "7700"])?;
    assert_eq!(String::from_utf8_lossy(&host.stdout).trim(), "hello-host");
    Ok(())
}
}
