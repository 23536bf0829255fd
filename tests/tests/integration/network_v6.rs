//! IPv6 (issue 14, part 3): each VPS has an address from the daemon's
//! prefix (a ULA /64 chosen once and kept in the state directory by
//! default), reaches its neighbours and the host gateway by it in both
//! network modes, and cannot send from an address not its own.
use std::time::Duration;

use vzhost_tests::{Daemon, run_in_netns, stderr};

use crate::network::{in_vps_netns, net_of};

fn ip6_of(d: &Daemon, vps: &str) -> String {
    d.status(vps).expect("listed")["ip6"]
        .as_str()
        .expect("an IPv6 address")
        .to_owned()
}

/// The daemon's prefix, as it kept it.
fn prefix_of(d: &Daemon) -> String {
    std::fs::read_to_string(d.root().join("subnet6"))
        .expect("the prefix is kept in the state directory")
        .trim()
        .to_owned()
}

/// Address number `n` of the /64 `prefix` ("fdxx:...::/64").
fn in_prefix(prefix: &str, n: u32) -> String {
    let net: std::net::Ipv6Addr = prefix.split('/').next().unwrap().parse().unwrap();
    std::net::Ipv6Addr::from(u128::from(net) + u128::from(n)).to_string()
}

fn two_v6(d: &Daemon) -> (String, String, String) {
    let prefix = prefix_of(d);
    d.ok(&["create", "a", "--ip6", &in_prefix(&prefix, 10)]);
    d.ok(&["create", "b"]);
    d.ok(&["start", "a"]);
    d.ok(&["start", "b"]);
    (ip6_of(d, "a"), ip6_of(d, "b"), in_prefix(&prefix, 1))
}

vzhost_tests::net_test! {
fn vpss_reach_each_other_and_the_gateway_over_ipv6() -> anyhow::Result<()> {
    let d = Daemon::start("net6")?;
    let prefix = prefix_of(&d);
    assert!(prefix.starts_with("fd") && prefix.ends_with("/64"), "a ULA /64: {prefix}");
    let (a, b, gateway) = two_v6(&d);
    assert_eq!(a, in_prefix(&prefix, 10), "the one asked for");
    assert_eq!(b, in_prefix(&prefix, 2), "the first free one");
    assert!(d.ok(&["list"]).contains(&a), "{}", d.ok(&["list"]));
    assert!(d.sh_ok("a", "cat /etc/hosts").contains(&format!("{a} a")));
    assert!(d.sh_ok("a", "ip -6 addr show eth0").contains(&a));
    assert!(d.sh_ok("a", "ip -6 route").contains(&format!("default via {gateway}")));
    d.sh_ok("a", &format!("ping -6 -c 1 -W 5 {b}"));
    d.sh_ok("a", &format!("ping -6 -c 1 -W 5 {gateway}"));
    d.sh_ok(
        "a",
        "(while true; do echo hello6-from-a | nc -l -p 7000; done) >/dev/null 2>&1 &",
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        d.sh_ok("b", &format!("nc {a} 7000 </dev/null")),
        "hello6-from-a"
    );
    let host = d.host_run(&["/bin/busybox", "nc", &a, "7000"])?;
    assert_eq!(
        String::from_utf8_lossy(&host.stdout).trim(),
        "hello6-from-a",
        "{}",
        stderr(&host)
    );
    // Without NAT, IPv6 from the prefix stays on the host, as IPv4 does.
    let rules = String::from_utf8_lossy(&d.host_run(&["ip", "-6", "rule"])?.stdout).into_owned();
    let net = prefix.split('/').next().unwrap_or_default().to_owned();
    assert!(
        rules.contains(&format!("from {net}")) && rules.contains("unreachable"),
        "{rules}"
    );
    // Nothing of it counted as forged.
    assert_eq!(net_of(&d, "a")["spoofed_dropped"].as_u64(), Some(0));
    assert_eq!(net_of(&d, "b")["spoofed_dropped"].as_u64(), Some(0));
    Ok(())
}
}

vzhost_tests::net_test! {
fn a_forged_ipv6_source_is_dropped_and_counted() -> anyhow::Result<()> {
    let d = Daemon::start("spoof6")?;
    let (_, b, gateway) = two_v6(&d);
    // a's root takes b's address as well as its own (its CAP_NET_ADMIN
    // covers its own network namespace) and sends from it.
    let pid = d.status("a").unwrap()["init_pid"].as_u64().unwrap();
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    let add = run_in_netns(&ns, &["ip", "-6", "addr", "add", &format!("{b}/128"), "dev", "eth0", "nodad"])?;
    assert!(add.status.success(), "{}", stderr(&add));
    let forged = run_in_netns(&ns, &["/bin/busybox", "ping", "-6", "-c", "2", "-W", "2", "-I", &b, &gateway])?;
    assert!(!forged.status.success(), "a forged source got through");
    let dropped = net_of(&d, "a")["spoofed_dropped"].as_u64().unwrap();
    assert!(dropped >= 2, "dropped and counted: {dropped}");
    // b's own traffic still passes.
    d.sh_ok("b", &format!("ping -6 -c 1 -W 5 {gateway}"));
    Ok(())
}
}

vzhost_tests::net_test! {
fn an_ipv6_address_outside_the_prefix_is_refused() -> anyhow::Result<()> {
    let d = Daemon::start("out6")?;
    let out = d.vz(&["create", "x", "--ip6", "2001:db8::5"])?;
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("ip6") && e.contains("outside") && e.contains("--ip6"), "{e}");
    let gw = d.vz(&["create", "x", "--ip6", &in_prefix(&prefix_of(&d), 1)])?;
    assert!(!gw.status.success(), "the gateway is refused");
    assert!(d.list().is_empty());
    Ok(())
}
}

vzhost_tests::net_test! {
fn stopped_and_destroyed_vpss_leave_no_ipv6_route() -> anyhow::Result<()> {
    let d = Daemon::start("clean6")?;
    let (a, b, gateway) = two_v6(&d);
    d.sh_ok("a", &format!("ping -6 -c 1 -W 5 {gateway}"));
    let routes = || {
        String::from_utf8_lossy(&d.host_run(&["ip", "-6", "route"]).unwrap().stdout).into_owned()
    };
    d.ok(&["stop", "a"]);
    assert!(!routes().contains(&a), "a's route is left: {}", routes());
    d.ok(&["stop", "b"]);
    d.ok(&["destroy", "a"]);
    d.ok(&["destroy", "b"]);
    let left = routes();
    assert!(!left.contains(&a) && !left.contains(&b), "{left}");
    Ok(())
}
}

/// bind(2) of a new IPv6 stream socket to `addr`:`port`: Ok when the
/// result is `want` (0: success, else that errno).
fn bind6(addr: &str, port: u16, want: i32) -> std::io::Result<()> {
    let ip: std::net::Ipv6Addr = addr.parse().expect("IPv6 literal");
    // SAFETY: socket calls on a zeroed, filled sockaddr_in6 that outlives them.
    let got = unsafe {
        let sock = libc::socket(libc::AF_INET6, libc::SOCK_STREAM, 0);
        let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
        sa.sin6_family = libc::AF_INET6 as u16;
        sa.sin6_port = port.to_be();
        sa.sin6_addr.s6_addr = ip.octets();
        let r = libc::bind(
            sock,
            std::ptr::from_ref(&sa).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        );
        let errno = if r == 0 { 0 } else { *libc::__errno_location() };
        libc::close(sock);
        errno
    };
    if got == want {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "bind {addr}: errno {got}, wanted {want}"
        )))
    }
}

vzhost_tests::net_test! {
fn a_vps_binds_its_own_ipv6_address_and_no_other() -> anyhow::Result<()> {
    let d = Daemon::start("bind6")?;
    let (a, b, _) = two_v6(&d);
    assert!(
        in_vps_netns(&d, "a", move || bind6(&a, 7400, 0)).success(),
        "a binds its own IPv6 address"
    );
    assert!(
        in_vps_netns(&d, "a", move || bind6(&b, 7401, libc::EPERM)).success(),
        "a cannot bind b's"
    );
    Ok(())
}
}
