//! VPS networking: own addresses, reachability between VPSs and from the
//! host, teardown, bad input; each test once per network mode (routed and
//! bridged). The daemon always runs in a network namespace the test made,
//! so nothing reaches a real interface.
use anyhow::Context as _;
use vzhost_tests::{Daemon, stderr};

pub(crate) fn ip_of(d: &Daemon, vps: &str) -> String {
    let v = d.status(vps).unwrap();
    v["ip"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

pub(crate) fn two_networked(d: &Daemon) -> (String, String) {
    d.ok(&["create", "a", "--ip", "10.213.0.10/16"]);
    d.ok(&["create", "b"]);
    d.ok(&["start", "a"]);
    d.ok(&["start", "b"]);
    (ip_of(d, "a"), ip_of(d, "b"))
}

vzhost_tests::net_test! {
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
}

vzhost_tests::net_test! {
fn stop_and_destroy_leave_no_veth_behind() -> anyhow::Result<()> {
    let d = Daemon::start("netdown")?;
    two_networked(&d);
    let links = |d: &Daemon| {
        let out = d.host_run(&["/bin/busybox", "ip", "-o", "link"]).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (va, vb) = (format!(" {}@", d.veth(1)), format!(" {}@", d.veth(2)));
    let before = links(&d);
    assert!(
        before.contains(&va) && before.contains(&vb) && before.contains("vzbr0"),
        "{before}"
    );
    d.ok(&["stop", "a"]);
    assert!(!links(&d).contains(&va), "a's veth is gone after stop");
    d.ok(&["start", "a"]);
    assert_eq!(
        ip_of(&d, "a"),
        "10.213.0.10",
        "the address survives a restart"
    );
    d.ok(&["destroy", "--force", "a"]);
    let after = links(&d);
    assert!(!after.contains(&va) && after.contains(&vb), "{after}");
    // The freed address can be given out again.
    d.ok(&["create", "c", "--ip", "10.213.0.10"]);
    Ok(())
}
}

vzhost_tests::net_test! {
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
}

pub(crate) fn net_of(d: &Daemon, vps: &str) -> serde_json::Value {
    d.status(vps).unwrap()["network"].clone()
}

vzhost_tests::net_test! {
fn guards_keep_a_vps_to_its_own_address_and_rules() -> anyhow::Result<()> {
    let d = Daemon::start("guards")?;
    let (a, b) = two_networked(&d);
    let out = d.sh("a", &format!("httpd -f -p {b}:7100"));
    assert!(!out.status.success(), "binding b's address must fail");
    let text = stderr(&out);
    assert!(
        text.contains("not permitted") || text.contains("not available"),
        "{text}"
    );
    d.sh_ok("a", &format!("httpd -p {a}:7101"));
    d.sh_ok("a", "httpd -p 0.0.0.0:7102");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let listening = d.sh_ok("a", "netstat -ltn");
    assert!(
        listening.contains(&format!("{a}:7101")),
        "own address: {listening}"
    );
    assert!(
        listening.contains(&format!("{a}:7102")),
        "the wildcard means its own: {listening}"
    );
    let meta = d.sh("a", "nc -w 2 169.254.169.254 80 </dev/null");
    assert!(!meta.status.success());
    assert!(
        stderr(&meta).contains("not permitted"),
        "metadata denied: {}",
        stderr(&meta)
    );
    // Through an IPv6 socket (v4-mapped) the same rule holds, and a
    // foreign IPv6 address cannot be bound.
    assert!(
        in_vps_netns(&d, "a", || v6_errno(
            libc::connect,
            "::ffff:169.254.169.254",
            80,
            libc::EPERM
        ))
        .success(),
        "connect6 to the mapped metadata address must be EPERM"
    );
    assert!(
        in_vps_netns(&d, "a", || v6_errno(
            libc::bind,
            "2001:db8::1",
            7300,
            libc::EPERM
        ))
        .success(),
        "bind6 to a foreign address must be EPERM"
    );
    let host = d.host_run(&["/bin/busybox", "nc", "-w", "1", "169.254.169.254", "80"])?;
    assert!(
        !stderr(&host).contains("not permitted"),
        "host unaffected: {}",
        stderr(&host)
    );
    Ok(())
}
}

vzhost_tests::net_test! {
fn traffic_counters_move_by_the_bytes_sent() -> anyhow::Result<()> {
    let d = Daemon::start("counters")?;
    let (a, _) = two_networked(&d);
    const BYTES: f64 = 4.0 * 1024.0 * 1024.0;
    d.sh_ok(
        "a",
        "mkdir -p /srv && dd if=/dev/zero of=/srv/blob bs=4096 count=1024 2>/dev/null",
    );
    d.sh_ok("a", "httpd -p 0.0.0.0:8080 -h /srv");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (a0, b0) = (net_of(&d, "a"), net_of(&d, "b"));
    d.sh_ok("b", &format!("wget -q -O /dev/null http://{a}:8080/blob"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (a1, b1) = (net_of(&d, "a"), net_of(&d, "b"));
    let delta = |x: &serde_json::Value, y: &serde_json::Value, k: &str| {
        (y[k].as_u64().unwrap() - x[k].as_u64().unwrap()) as f64
    };
    // Packets are counted whole (IP and TCP headers too), as interface
    // counters are; full-size segments keep that within the 5%.
    let sent = delta(&a0, &a1, "tx_bytes");
    let got = delta(&b0, &b1, "rx_bytes");
    for (what, v) in [("a egress", sent), ("b ingress", got)] {
        assert!(
            (v - BYTES).abs() / BYTES < 0.05,
            "{what} moved by {v} bytes for {BYTES} sent: a {a1} / b {b1}"
        );
    }
    Ok(())
}
}

/// The files that put a process into VPS `vps`: its network namespace and
/// its cgroup's procs file.
pub(crate) fn vps_handles(d: &Daemon, vps: &str) -> (std::fs::File, std::fs::File) {
    let pid = d.status(vps).unwrap()["init_pid"].as_u64().unwrap();
    handles_of(d, vps, pid)
}

/// `vps_handles` of VPS `vps` whose init is `pid` (no daemon needed).
pub(crate) fn handles_of(d: &Daemon, vps: &str, pid: u64) -> (std::fs::File, std::fs::File) {
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(d.vps_cgroup(vps).join("cgroup.procs"))
        .unwrap();
    (netns, procs)
}

/// Run `work` in a child placed in a VPS's cgroup and network namespace
/// (between fork and exec of /bin/true), as a tool inside the VPS would;
/// its exit status tells whether `work` succeeded.
pub(crate) fn in_vps(
    (netns, procs): (std::fs::File, std::fs::File),
    work: impl Fn() -> std::io::Result<()> + Send + Sync + 'static,
) -> std::process::ExitStatus {
    use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
    let (ns_fd, procs_fd) = (netns.as_raw_fd(), procs.as_raw_fd());
    let mut cmd = std::process::Command::new("/bin/true");
    // SAFETY: only raw syscalls on prepared buffers between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1
                || libc::setns(ns_fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            work()
        });
    }
    let status = cmd.status().expect("helper in the VPS");
    drop((netns, procs));
    status
}

pub(crate) fn in_vps_netns(
    d: &Daemon,
    vps: &str,
    work: impl Fn() -> std::io::Result<()> + Send + Sync + 'static,
) -> std::process::ExitStatus {
    in_vps(vps_handles(d, vps), work)
}

/// `call` (connect or bind) on a new IPv6 stream socket to `addr`:`port`;
/// Ok when it fails with `want`.
fn v6_errno(
    call: unsafe extern "C" fn(libc::c_int, *const libc::sockaddr, libc::socklen_t) -> libc::c_int,
    addr: &str,
    port: u16,
    want: i32,
) -> std::io::Result<()> {
    let ip: std::net::Ipv6Addr = addr.parse().expect("IPv6 literal");
    // SAFETY: socket calls on a zeroed, filled sockaddr_in6 that outlives them.
    unsafe {
        let sock = libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
        sa.sin6_family = libc::AF_INET6 as u16;
        sa.sin6_port = port.to_be();
        sa.sin6_addr.s6_addr = ip.octets();
        let r = call(
            sock,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in6>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(sock);
        if r == 0 || err.raw_os_error() != Some(want) {
            return Err(std::io::Error::other("unexpected result"));
        }
    }
    Ok(())
}

pub(crate) fn sockaddr(ip: std::net::Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data.
    let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    a.sin_family = libc::AF_INET as u16;
    a.sin_port = port.to_be();
    a.sin_addr.s_addr = u32::from_ne_bytes(ip.octets());
    a
}

/// An IPv4 UDP datagram from `src` to `dst`:`port` (source port 40000),
/// header checksum filled in, UDP checksum left 0 (none).
pub(crate) fn ipv4_udp(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut pkt = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
    pkt.extend(src.octets());
    pkt.extend(dst.octets());
    pkt.extend(40000u16.to_be_bytes());
    pkt.extend(port.to_be_bytes());
    pkt.extend(((8 + payload.len()) as u16).to_be_bytes());
    pkt.extend([0, 0]);
    pkt.extend(payload);
    let total = pkt.len() as u16;
    pkt[2..4].copy_from_slice(&total.to_be_bytes());
    let sum = pkt[..20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let check = !(((folded & 0xffff) + (folded >> 16)) as u16);
    pkt[10..12].copy_from_slice(&check.to_be_bytes());
    pkt
}

/// Send one raw UDP datagram from inside `vps` with source address `src`.
pub(crate) fn send_raw_udp(d: &Daemon, vps: &str, src: &str, dst: &str, port: u16, payload: &[u8]) {
    let (s, t): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        (src.parse().unwrap(), dst.parse().unwrap());
    let pkt = ipv4_udp(s, t, port, payload);
    let to = sockaddr(t, 0);
    let status = in_vps_netns(d, vps, move || {
        // SAFETY: raw socket calls on buffers that live through them.
        unsafe {
            let sock = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            if sock < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::sendto(
                sock,
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            );
            libc::close(sock);
        }
        Ok(())
    });
    assert!(status.success(), "raw sender failed: {status}");
}

/// Wait up to 3 s for one UDP datagram on `port` inside `vps`; what arrived.
pub(crate) fn recv_udp(d: &Daemon, vps: &str, port: u16) -> std::thread::JoinHandle<Vec<u8>> {
    recv_udp_in(vps_handles(d, vps), port)
}

/// `recv_udp` in the VPS of `handles` (see `vps_handles`).
pub(crate) fn recv_udp_in(
    handles: (std::fs::File, std::fs::File),
    port: u16,
) -> std::thread::JoinHandle<Vec<u8>> {
    use std::os::fd::AsRawFd as _;
    std::thread::spawn(move || {
        let (r, w) = nix::unistd::pipe().unwrap();
        let w_fd = w.as_raw_fd();
        let here = sockaddr(std::net::Ipv4Addr::UNSPECIFIED, port);
        let status = in_vps(handles, move || {
            // SAFETY: socket calls on buffers that outlive them.
            unsafe {
                let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                let tv = libc::timeval {
                    tv_sec: 3,
                    tv_usec: 0,
                };
                libc::setsockopt(
                    sock,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const tv).cast(),
                    size_of::<libc::timeval>() as u32,
                );
                let len = size_of::<libc::sockaddr_in>() as u32;
                if libc::bind(sock, (&raw const here).cast(), len) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut buf = [0u8; 256];
                let n = libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n > 0 {
                    libc::write(w_fd, buf.as_ptr().cast(), n as usize);
                }
            }
            Ok(())
        });
        drop(w);
        assert!(status.success(), "udp receiver failed: {status}");
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut got).unwrap();
        got
    })
}

vzhost_tests::net_test! {
fn forged_source_packets_are_dropped_and_counted() -> anyhow::Result<()> {
    let d = Daemon::start("spoof")?;
    let (a, b) = two_networked(&d);
    let before = net_of(&d, "a")["spoofed_dropped"].as_u64().unwrap();
    let control = recv_udp(&d, "b", 9000);
    std::thread::sleep(std::time::Duration::from_millis(300));
    send_raw_udp(&d, "a", &a, &b, 9000, b"control");
    assert_eq!(
        control.join().unwrap(),
        b"control",
        "a packet with a's own source arrives"
    );
    let forged = recv_udp(&d, "b", 9001);
    std::thread::sleep(std::time::Duration::from_millis(300));
    send_raw_udp(&d, "a", &b, &b, 9001, b"forged");
    assert!(
        forged.join().unwrap().is_empty(),
        "the forged packet must not reach b"
    );
    let after = net_of(&d, "a")["spoofed_dropped"].as_u64().unwrap();
    assert_eq!(after, before + 1, "the drop is counted");
    Ok(())
}
}

/// Whether VPS a reaches a server on a test-made "outside" network that
/// has no route back to the VPS subnet (so only NAT can make it work).
fn outside_reachable(nat: bool) -> anyhow::Result<bool> {
    let args: &[&str] = if nat { &["--nat"] } else { &[] };
    let d = Daemon::start_with(
        if nat { "nat-on" } else { "nat-off" },
        &std::env::temp_dir(),
        args,
    )?;
    d.ok(&["create", "a"]);
    d.ok(&["start", "a"]);
    let wan = vzhost_tests::new_netns()?;
    let pid = d.pid().context("daemon pid")?.to_string();
    let in_wan = |argv: &[&str]| {
        let out = vzhost_tests::run_in_netns(&wan, argv).unwrap();
        assert!(out.status.success(), "{argv:?} in wan: {}", stderr(&out));
    };
    in_wan(&[
        "/usr/bin/ip",
        "link",
        "add",
        "wan0",
        "type",
        "veth",
        "peer",
        "name",
        "up0",
        "netns",
        &pid,
    ]);
    in_wan(&[
        "/usr/bin/ip",
        "addr",
        "add",
        "198.51.100.2/24",
        "dev",
        "wan0",
    ]);
    in_wan(&["/usr/bin/ip", "link", "set", "wan0", "up"]);
    for argv in [
        [
            "/usr/bin/ip",
            "addr",
            "add",
            "198.51.100.1/24",
            "dev",
            "up0",
        ]
        .as_slice(),
        ["/usr/bin/ip", "link", "set", "up0", "up"].as_slice(),
    ] {
        let out = d.host_run(argv)?;
        assert!(out.status.success(), "{argv:?}: {}", stderr(&out));
    }
    // The outside server; the test's netns handle keeps it reachable.
    let wan_fd = {
        use std::os::fd::AsRawFd as _;
        wan.as_raw_fd()
    };
    let mut server = {
        use std::os::unix::process::CommandExt as _;
        // nc itself is the child, so killing it leaves nothing behind.
        let mut c = std::process::Command::new("/bin/busybox");
        c.args(["nc", "-l", "-p", "7400"])
            .stdin(std::process::Stdio::piped());
        // SAFETY: only setns(2) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(wan_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c.stdout(std::process::Stdio::null()).spawn()?
    };
    let mut reply = server.stdin.take().context("server stdin")?;
    {
        use std::io::Write as _;
        reply.write_all(b"hello-from-outside\n")?;
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = d.sh("a", "nc -w 3 198.51.100.2 7400 </dev/null");
    let _ = server.kill();
    let _ = server.wait();
    // Held open until here: nc closes the connection at EOF on stdin.
    drop(reply);
    Ok(String::from_utf8_lossy(&out.stdout).contains("hello-from-outside"))
}

vzhost_tests::net_test! {
fn nat_is_off_by_default_and_works_when_turned_on() -> anyhow::Result<()> {
    assert!(
        !outside_reachable(false)?,
        "without --nat no VPS traffic leaves the host"
    );
    assert!(
        outside_reachable(true)?,
        "with --nat a VPS reaches the outside, masqueraded"
    );
    Ok(())
}
}
