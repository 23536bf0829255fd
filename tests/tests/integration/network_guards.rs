//! The tc program on the host side of each VPS's veth, attacked (issue 12,
//! findings 9 and 10): DNAT inside the VPS, raw and packet sockets, and a
//! VPS taking a neighbour's address. Every frame a VPS sends is checked
//! there, whatever made it. The development hosts load tc programs, so
//! these run natively and in the VM.
use std::time::Duration;

use vzhost_tests::{Daemon, run_in_netns, stderr};

use crate::{
    network::{
        handles_of, in_vps, ip_of, ipv4_udp, net_of, recv_udp, recv_udp_in, send_raw_udp,
        two_networked, vps_handles,
    },
    policy::within,
};

const GATEWAY: &str = "10.213.0.1";

fn spoofed(d: &Daemon, vps: &str) -> u64 {
    net_of(d, vps)["spoofed_dropped"].as_u64().unwrap()
}

/// VPS `a` (10.213.0.10) under `policy` (selecting it by name) and `b`
/// (10.213.0.2) under the default, both running.
fn pair_under(name: &str, file: &str, policy: &str) -> anyhow::Result<Daemon> {
    let d = Daemon::start(name)?;
    d.put_policy(file, &format!("selector:\n  names: [a]\n{policy}"));
    let wanted = file.trim_end_matches(".yaml");
    d.ok(&["create", "a", "--ip", "10.213.0.10/16"]);
    within(Duration::from_secs(3), || {
        d.status("a").is_some_and(|s| s["policy"] == wanted)
    })
    .expect("the daemon picked the policy up");
    d.ok(&["create", "b", "--ip", "10.213.0.2/16"]);
    d.ok(&["start", "a"]);
    d.ok(&["start", "b"]);
    Ok(d)
}

/// Run the host's nft in VPS `vps`'s network namespace, as its root (who
/// has CAP_NET_ADMIN there) could.
fn nft_in(d: &Daemon, vps: &str, args: &[&str]) {
    let pid = d.status(vps).unwrap()["init_pid"].as_u64().unwrap();
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    let argv: Vec<&str> = std::iter::once("/usr/sbin/nft")
        .chain(args.iter().copied())
        .collect();
    let out = run_in_netns(&ns, &argv).unwrap();
    assert!(out.status.success(), "nft {args:?}: {}", stderr(&out));
}

/// The events of `vps` from the veth program, waiting for at least one.
fn veth_events(d: &Daemon, vps: &str) -> Vec<serde_json::Value> {
    d.await_event(vps, "veth_egress")
        .expect("the veth program reported its drop");
    d.events(vps)
        .into_iter()
        .filter(|e| e["hook"] == "veth_egress")
        .collect()
}

vzhost_tests::net_test! {
fn dnat_and_raw_sockets_inside_a_vps_do_not_reach_a_denied_destination() -> anyhow::Result<()> {
    let d = pair_under(
        "veth-dnat",
        "dnat.yaml",
        "network:\n  deny_egress:\n    - cidr: 10.213.0.2/32\n",
    )?;
    let b = ip_of(&d, "b");
    d.sh_ok(
        "b",
        "(while true; do nc -l -p 7000 >> /tmp/got; done) >/dev/null 2>&1 &",
    );
    let control_log = d.state.path().join("host-7000.log");
    let mut host = d.host_spawn(&["/bin/busybox", "nc", "-l", "-p", "7000"], &control_log)?;
    std::thread::sleep(Duration::from_millis(300));
    let direct = d.sh("a", &format!("echo direct | nc -w 2 {b} 7000"));
    assert!(
        stderr(&direct).contains("not permitted"),
        "the connect hook denies b: {}",
        stderr(&direct)
    );
    // a's root rewrites an allowed address to another: first the gateway
    // (proving the DNAT works), then b, which the rule denies.
    nft_in(&d, "a", &["add", "table", "ip", "nat"]);
    nft_in(
        &d,
        "a",
        &[
            "add",
            "chain",
            "ip",
            "nat",
            "out",
            "{ type nat hook output priority -100; }",
        ],
    );
    nft_in(
        &d,
        "a",
        &[
            "add",
            "rule",
            "ip",
            "nat",
            "out",
            "ip",
            "daddr",
            "10.213.0.200",
            "dnat",
            "to",
            GATEWAY,
        ],
    );
    d.sh("a", "echo via-dnat-to-gateway | nc -w 2 10.213.0.200 7000");
    let _ = host.kill();
    let _ = host.wait();
    let got = std::fs::read_to_string(&control_log)?;
    assert!(
        got.contains("via-dnat-to-gateway"),
        "the DNAT works: {got:?}"
    );
    nft_in(&d, "a", &["flush", "chain", "ip", "nat", "out"]);
    nft_in(
        &d,
        "a",
        &[
            "add",
            "rule",
            "ip",
            "nat",
            "out",
            "ip",
            "daddr",
            "10.213.0.200",
            "dnat",
            "to",
            &b,
        ],
    );
    let attack = d.sh("a", "echo via-dnat | nc -w 2 10.213.0.200 7000");
    assert!(
        !stderr(&attack).contains("not permitted"),
        "connect saw the allowed address, as the attack wants: {}",
        stderr(&attack)
    );
    // A raw socket meets no socket hook on its way out.
    let raw = recv_udp(&d, "b", 9000);
    std::thread::sleep(Duration::from_millis(300));
    send_raw_udp(&d, "a", "10.213.0.10", &b, 9000, b"raw-to-b");
    assert!(
        raw.join().unwrap().is_empty(),
        "the raw datagram must not reach b"
    );
    std::thread::sleep(Duration::from_millis(300));
    let at_b = d.sh_ok("b", "cat /tmp/got 2>/dev/null; true");
    assert!(!at_b.contains("via-dnat"), "b received: {at_b:?}");
    let events = veth_events(&d, "a");
    assert!(
        events
            .iter()
            .any(|e| e["rule"] == "dnat:network.deny_egress[0]"),
        "{events:?}"
    );
    Ok(())
}
}

/// The MAC address of `vps`'s eth0, as it reports it.
fn mac_of(d: &Daemon, vps: &str) -> String {
    let link = d.sh_ok(vps, "ip link show eth0");
    link.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {link}"))
        .to_owned()
}

fn host_neigh(d: &Daemon, ip: &str) -> String {
    let out = d
        .host_run(&["/bin/busybox", "ip", "neigh", "show", ip])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

vzhost_tests::net_test! {
fn a_vps_cannot_take_over_a_neighbours_address() -> anyhow::Result<()> {
    let d = Daemon::start("veth-takeover")?;
    let (a, b) = two_networked(&d);
    let (a_mac, b_mac) = (mac_of(&d, "a"), mac_of(&d, "b"));
    assert_ne!(a_mac, b_mac);
    let before = spoofed(&d, "a");
    // a takes b's address and says so, five times: the host learns b
    // afresh, then (after ARP's one-second lock time) a announces itself;
    // a's kernel also answers the host's requests for b.
    d.sh_ok("a", &format!("ip addr add {b}/16 dev eth0"));
    // Where the host keeps its entry for b: on the bridge, or on b's veth.
    let b_link = match d.network_mode() {
        vzhost_tests::NetMode::Bridged => "vzbr0".to_owned(),
        vzhost_tests::NetMode::Routed => d.veth(2),
    };
    for round in 0..5 {
        let flush = d.host_run(&["/bin/busybox", "ip", "neigh", "flush", "dev", &b_link])?;
        assert!(flush.status.success(), "{}", stderr(&flush));
        let ping = d.host_run(&["/bin/busybox", "ping", "-c", "1", "-W", "2", &b])?;
        assert!(ping.status.success(), "round {round}: {}", stderr(&ping));
        std::thread::sleep(Duration::from_millis(1100));
        // Gratuitous ARP, request and reply, through a packet socket
        // (sent by the test as host root, so no LSM guard stops it first:
        // the veth program must), and a ping from b's address.
        for oper in [1, 2] {
            send_frame(&d, "a", garp(oper, &mac_bytes(&a_mac), &b));
        }
        d.sh("a", &format!("ping -c 1 -W 1 -I {b} {GATEWAY}"));
        let ping = d.host_run(&["/bin/busybox", "ping", "-c", "1", "-W", "2", &b])?;
        assert!(ping.status.success(), "round {round}: {}", stderr(&ping));
        let neigh = host_neigh(&d, &b);
        assert!(
            neigh.contains(&b_mac) && !neigh.contains(&a_mac),
            "round {round}: the host's entry for {b} is {neigh:?} (b is {b_mac}, a is {a_mac})"
        );
    }
    d.sh_ok("b", &format!("ping -c 1 -W 2 {GATEWAY}"));
    assert!(
        spoofed(&d, "a") > before,
        "the drops are counted: {}",
        net_of(&d, "a")
    );
    let events = veth_events(&d, "a");
    assert!(
        events.iter().any(|e| e["rule"] == "anti-spoofing"),
        "{events:?}"
    );
    // a's own address still works for a.
    d.sh_ok("a", &format!("ip addr del {b}/16 dev eth0"));
    d.sh_ok("a", &format!("ping -c 1 -W 2 {GATEWAY}"));
    assert_eq!(ip_of(&d, "a"), a);
    Ok(())
}
}

/// A gratuitous ARP frame (`oper` 1 request, 2 reply) announcing that
/// `ip` is at `mac`.
fn garp(oper: u8, mac: &[u8], ip: &str) -> Vec<u8> {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    let mut f = vec![0xff; 6];
    f.extend(mac);
    f.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, oper]);
    f.extend(mac);
    f.extend(ip.octets());
    f.extend([0xff; 6]);
    f.extend(ip.octets());
    f
}

/// Send one Ethernet frame on VPS `vps`'s eth0 through a packet socket.
fn send_frame(d: &Daemon, vps: &str, frame: Vec<u8>) {
    send_frame_in(vps_handles(d, vps), frame);
}

/// `send_frame` in the VPS of `handles` (see `vps_handles`).
fn send_frame_in(handles: (std::fs::File, std::fs::File), frame: Vec<u8>) {
    let status = in_vps(handles, move || {
        // SAFETY: packet socket calls on buffers that live through them.
        unsafe {
            let sock = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if sock < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut to: libc::sockaddr_ll = std::mem::zeroed();
            to.sll_family = libc::AF_PACKET as u16;
            to.sll_ifindex = libc::if_nametoindex(c"eth0".as_ptr()) as i32;
            to.sll_halen = 6;
            to.sll_addr[..6].copy_from_slice(&frame[..6]);
            let sent = libc::sendto(
                sock,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            libc::close(sock);
            if sent < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    });
    assert!(status.success(), "packet sender failed: {status}");
}

fn mac_bytes(mac: &str) -> Vec<u8> {
    mac.split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

/// The MAC that VPS number `from` sends a frame for VPS `to` to: `to`'s
/// own on a bridge; routed, the host end of `from`'s veth, which answers
/// its ARP for every neighbour (proxy ARP) and routes the packet on.
fn next_hop_mac(d: &Daemon, from: u32, to: u32) -> Vec<u8> {
    match d.network_mode() {
        vzhost_tests::NetMode::Bridged => vzhost::net::vps_mac(to).to_vec(),
        vzhost_tests::NetMode::Routed => {
            let out = d
                .host_run(&["/usr/bin/ip", "-o", "link", "show", "dev", &d.veth(from)])
                .unwrap();
            let link = String::from_utf8_lossy(&out.stdout).into_owned();
            let mac = link
                .split_whitespace()
                .skip_while(|w| *w != "link/ether")
                .nth(1)
                .unwrap_or_else(|| panic!("no MAC in {link}"));
            mac_bytes(mac)
        }
    }
}

/// A frame sent to b and whether it must arrive.
struct Frame {
    src_mac: [u8; 6],
    src: &'static str,
    port: u16,
    payload: &'static [u8],
    arrives: bool,
}

vzhost_tests::net_test! {
fn packet_socket_frames_with_a_forged_source_are_dropped() -> anyhow::Result<()> {
    let d = Daemon::start("veth-packet")?;
    let (a, b) = two_networked(&d);
    assert_eq!(a, "10.213.0.10");
    let a_mac: [u8; 6] = mac_bytes(&mac_of(&d, "a")).try_into().unwrap();
    let to_b = next_hop_mac(&d, 1, 2);
    let before = spoofed(&d, "a");
    // Sent by the test as host root in a's network namespace: no LSM
    // guard on packet sockets stops them first; the veth program must.
    let frames = [
        Frame {
            src_mac: a_mac,
            src: "10.213.0.10",
            port: 9100,
            payload: b"own-source",
            arrives: true,
        },
        Frame {
            src_mac: a_mac,
            src: "10.213.0.77",
            port: 9101,
            payload: b"forged-ip",
            arrives: false,
        },
        Frame {
            src_mac: [0x02, 0, 0, 0, 0, 0x99],
            src: "10.213.0.10",
            port: 9102,
            payload: b"forged-mac",
            arrives: false,
        },
    ];
    for f in frames {
        let got = recv_udp(&d, "b", f.port);
        std::thread::sleep(Duration::from_millis(300));
        let mut frame = to_b.clone();
        frame.extend(f.src_mac);
        frame.extend([0x08, 0x00]);
        frame.extend(ipv4_udp(f.src.parse()?, b.parse()?, f.port, f.payload));
        send_frame(&d, "a", frame);
        let got = got.join().unwrap();
        if f.arrives {
            assert_eq!(
                got, f.payload,
                "a frame from a's own MAC and address arrives"
            );
        } else {
            assert!(
                got.is_empty(),
                "{:?} must not reach b",
                String::from_utf8_lossy(f.payload)
            );
        }
    }
    assert_eq!(
        spoofed(&d, "a"),
        before + 2,
        "both forged frames are counted"
    );
    Ok(())
}
}

/// Whether a forged frame from a (source 10.213.0.77) reaches b on
/// `port`; a and b are found by their inits' pids, daemon or not.
fn forged_arrives(d: &Daemon, (a, b): (u64, u64), port: u16) -> bool {
    // VPS ids 1 and 2, as made by `two_networked`.
    let mac = |id: u32| vzhost::net::vps_mac(id).to_vec();
    let got = recv_udp_in(handles_of(d, "b", b), port);
    std::thread::sleep(Duration::from_millis(300));
    let mut frame = next_hop_mac(d, 1, 2);
    frame.extend(mac(1));
    frame.extend([0x08, 0x00]);
    frame.extend(ipv4_udp(
        "10.213.0.77".parse().unwrap(),
        "10.213.0.2".parse().unwrap(),
        port,
        b"forged",
    ));
    send_frame_in(handles_of(d, "a", a), frame);
    !got.join().unwrap().is_empty()
}

vzhost_tests::net_test! {
fn the_veth_program_outlives_the_daemon_and_is_taken_over() -> anyhow::Result<()> {
    let mut d = Daemon::start("veth-restart")?;
    let (_, b) = two_networked(&d);
    assert_eq!(b, "10.213.0.2");
    let pid = |vps: &str| d.status(vps).unwrap()["init_pid"].as_u64().unwrap();
    let inits = (pid("a"), pid("b"));
    assert!(!forged_arrives(&d, inits, 9200));
    d.kill9();
    assert!(
        !forged_arrives(&d, inits, 9201),
        "with no daemon running the filter stays on the veth"
    );
    d.spawn()?;
    let before = spoofed(&d, "a");
    assert!(
        !forged_arrives(&d, inits, 9202),
        "the new daemon's program took over"
    );
    assert_eq!(spoofed(&d, "a"), before + 1, "and counts into its maps");
    assert!(d.log().contains("adopted running VPS"), "{}", d.log());
    Ok(())
}
}
