//! Routed mode (OpenVZ's venet, done with today's kernel) seen from the
//! host: veths on no bridge, a /32 route per running VPS, proxy ARP; and
//! the bridge's port limit, which bridged mode refuses clearly and routed
//! mode does not have.
use std::time::Duration;

use vzhost_tests::{Daemon, NetMode, in_mode, stderr};

use crate::network::{net_of, recv_udp, send_raw_udp, two_networked};

const GATEWAY: &str = "10.213.0.1";

fn host_out(d: &Daemon, argv: &[&str]) -> String {
    let out = d.host_run(argv).unwrap();
    assert!(out.status.success(), "{argv:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host's route to `ip` alone, as `ip` prints it (empty: none).
fn host_route(d: &Daemon, ip: &str) -> String {
    host_out(
        d,
        &[
            "/usr/bin/ip",
            "-4",
            "route",
            "show",
            "exact",
            &format!("{ip}/32"),
        ],
    )
}

#[test]
fn routed_vpss_reach_each_other_and_the_host_through_host_routes() -> anyhow::Result<()> {
    in_mode(NetMode::Routed, || {
        let d = Daemon::start("routed")?;
        let (a, b) = two_networked(&d);
        assert_eq!(d.network_mode(), NetMode::Routed);
        for (id, ip) in [(1, &a), (2, &b)] {
            let veth = d.veth(id);
            let link = host_out(&d, &["/usr/bin/ip", "-o", "link", "show", "dev", &veth]);
            assert!(!link.contains(" master "), "{veth} is on no bridge: {link}");
            let route = host_route(&d, ip);
            assert!(
                route.contains(&format!("dev {veth}")) && route.contains(&format!("src {GATEWAY}")),
                "a /32 to {ip} through {veth}: {route:?}"
            );
            let proxy = host_out(
                &d,
                &[
                    "/bin/cat",
                    &format!("/proc/sys/net/ipv4/conf/{veth}/proxy_arp"),
                ],
            );
            assert_eq!(proxy.trim(), "1", "{veth} answers ARP for the host");
        }
        // Ping and TCP both ways between the VPSs, and to the host.
        d.sh_ok("a", &format!("ping -c 1 -W 5 {b}"));
        d.sh_ok("b", &format!("ping -c 1 -W 5 {a}"));
        d.sh_ok("a", &format!("ping -c 1 -W 5 {GATEWAY}"));
        d.sh_ok("b", "(echo hello-from-b | nc -l -p 7000) >/dev/null 2>&1 &");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            d.sh_ok("a", &format!("nc -w 3 {b} 7000 </dev/null")),
            "hello-from-b"
        );
        // A web server on the host's port 53: the default policy lets
        // VPSs reach the host for DNS (and ping) only.
        let www = d.state.path().join("www");
        std::fs::create_dir_all(&www)?;
        std::fs::write(www.join("hello"), "hello-from-host\n")?;
        let log = d.state.path().join("host-httpd.log");
        let www = www.to_string_lossy();
        let mut server = d.host_spawn(
            &[
                "/bin/busybox",
                "httpd",
                "-f",
                "-p",
                &format!("{GATEWAY}:53"),
                "-h",
                &www,
            ],
            &log,
        )?;
        d.wait_listening(53);
        // Retried while the server may still be starting (a loaded host).
        let fetch = || d.sh("a", &format!("wget -O - http://{GATEWAY}:53/hello"));
        let mut got = fetch();
        for _ in 0..20 {
            if got.status.success() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            got = fetch();
        }
        let _ = server.kill();
        let _ = server.wait();
        assert_eq!(
            String::from_utf8_lossy(&got.stdout).trim(),
            "hello-from-host",
            "{} / server: {}",
            stderr(&got),
            std::fs::read_to_string(&log)?
        );
        // A forged source is dropped and counted, as on a bridge.
        let before = net_of(&d, "a")["spoofed_dropped"].as_u64().unwrap();
        let forged = recv_udp(&d, "b", 9001);
        std::thread::sleep(Duration::from_millis(300));
        send_raw_udp(&d, "a", &b, &b, 9001, b"forged");
        assert!(
            forged.join().unwrap().is_empty(),
            "the forged packet must not reach b"
        );
        assert_eq!(
            net_of(&d, "a")["spoofed_dropped"].as_u64().unwrap(),
            before + 1
        );
        // Stop takes the route with the veth.
        d.ok(&["stop", "a"]);
        assert_eq!(host_route(&d, &a), "", "a's route is gone after stop");
        assert!(!host_route(&d, &b).is_empty(), "b's stays");
        d.ok(&["destroy", "--force", "b"]);
        assert_eq!(host_route(&d, &b), "", "b's route is gone after destroy");
        Ok(())
    })
}

/// Plug `count` veths of the test's own into `d`'s bridge, as if that many
/// VPSs ran on it.
fn fill_bridge(d: &Daemon, count: usize) -> anyhow::Result<()> {
    let batch = d.state.path().join("fill.batch");
    let lines: String = (0..count)
        .map(|i| format!("link add zf{i} master vzbr0 type veth peer name zg{i}\n"))
        .collect();
    std::fs::write(&batch, lines)?;
    host_out(d, &["/usr/bin/ip", "-batch", &batch.to_string_lossy()]);
    Ok(())
}

#[test]
fn a_full_bridge_refuses_a_start_clearly_and_routed_mode_has_no_such_limit() -> anyhow::Result<()> {
    let ports = vzhost::net::BRIDGE_MAX_PORTS;
    let bridged = in_mode(NetMode::Bridged, || Daemon::start("bridge-full"))?;
    bridged.ok(&["create", "a"]);
    fill_bridge(&bridged, ports)?;
    let err = bridged.fails(&["start", "a"]);
    assert!(
        err.contains(&format!("at most {ports} ports")) && err.contains("--network routed"),
        "{err}"
    );
    assert_eq!(bridged.status("a").unwrap()["status"], "stopped", "{err}");
    let links = host_out(&bridged, &["/usr/bin/ip", "-o", "link"]);
    assert!(
        !links.contains(&format!(" {}@", bridged.veth(1))),
        "the refused start left no veth"
    );
    // One port freed, the same VPS starts: the refusal left it intact.
    host_out(&bridged, &["/usr/bin/ip", "link", "del", "zf0"]);
    bridged.ok(&["start", "a"]);
    bridged.sh_ok("a", &format!("ping -c 1 -W 5 {GATEWAY}"));
    // Routed VPSs take no port: a bridge just as full does not matter.
    let routed = in_mode(NetMode::Routed, || Daemon::start("bridge-full"))?;
    routed.ok(&["create", "a"]);
    fill_bridge(&routed, ports)?;
    routed.ok(&["start", "a"]);
    routed.sh_ok("a", &format!("ping -c 1 -W 5 {GATEWAY}"));
    Ok(())
}

#[test]
fn a_daemon_keeps_its_network_mode_and_refuses_a_change_while_vpss_run() -> anyhow::Result<()> {
    let mut d = in_mode(NetMode::Bridged, || Daemon::start("mode-change"))?;
    d.ok(&["create", "a"]);
    d.ok(&["start", "a"]);
    d.kill9();
    let err = d
        .spawn_with(&["--network", "routed"])
        .expect_err("a mode change under a running VPS must be refused")
        .to_string();
    assert!(
        err.contains("(a) were wired in bridged network mode") && err.contains("--network bridged"),
        "{err}"
    );
    // Without the flag the stored mode is kept, and a is adopted as it is.
    d.spawn_with(&[])?;
    assert_eq!(d.network_mode(), NetMode::Bridged);
    d.sh_ok("a", &format!("ping -c 1 -W 5 {GATEWAY}"));
    // With nothing running the change goes through.
    d.ok(&["stop", "a"]);
    d.kill9();
    d.spawn_with(&["--network", "routed"])?;
    assert_eq!(d.network_mode(), NetMode::Routed);
    d.ok(&["start", "a"]);
    d.sh_ok("a", &format!("ping -c 1 -W 5 {GATEWAY}"));
    let link = host_out(
        &d,
        &["/usr/bin/ip", "-o", "link", "show", "dev", &d.veth(1)],
    );
    assert!(!link.contains(" master "), "routed now: {link}");
    Ok(())
}
