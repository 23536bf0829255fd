//! Egress deny rules attacked where they used to give way (issue 12,
//! finding 8): several ports on one network, and a less specific rule for
//! one port under a more specific rule for another. Every rule that
//! covers a connection must count. cgroup hooks: native and in the VM.
use std::time::Duration;

use vzhost_tests::{Daemon, stderr};

use crate::policy::within;

const GATEWAY: &str = "10.213.0.1";

/// Start VPS `a` under `policy` (selecting it by name).
fn vps_under(name: &str, policy: &str) -> anyhow::Result<Daemon> {
    let d = Daemon::start(name)?;
    d.put_policy(
        "egress.yaml",
        &format!("selector:\n  names: [a]\nmode: enforce\nnetwork:\n  deny_egress:\n{policy}"),
    );
    d.ok(&["create", "a"]);
    within(Duration::from_secs(3), || {
        d.status("a").is_some_and(|s| s["policy"] == "egress")
    })
    .expect("the daemon picked the policy up");
    d.ok(&["start", "a"]);
    assert!(
        !d.log().contains("log is not forwarded"),
        "the programs' aya-log reaches the daemon's log: {}",
        d.log()
    );
    Ok(d)
}

/// Whether a TCP connect from `a` to `ip`:`port` is refused by the KSAL.
fn denied(d: &Daemon, ip: &str, port: u16) -> bool {
    let out = d.sh("a", &format!("nc -w 1 {ip} {port} </dev/null"));
    stderr(&out).contains("not permitted")
}

vzhost_tests::net_test! {
fn two_ports_on_one_network_are_both_denied_and_a_third_is_not() -> anyhow::Result<()> {
    let d = vps_under(
        "egress-ports",
        "    - cidr: 0.0.0.0/0\n      port: 9090\n    - cidr: 0.0.0.0/0\n      port: 9091\n",
    )?;
    // A server on each port on the host side, so only the policy differs.
    let logs = d.state.path();
    let mut servers = Vec::new();
    for port in ["9090", "9091", "9092"] {
        let log = logs.join(format!("server-{port}.log"));
        servers.push(d.host_spawn(&["/bin/busybox", "nc", "-l", "-p", port], &log)?);
        d.wait_listening(port.parse()?);
    }
    let reached = d.sh("a", &format!("echo through-9092 | nc -w 2 {GATEWAY} 9092"));
    let verdicts = [denied(&d, GATEWAY, 9090), denied(&d, GATEWAY, 9091)];
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    assert_eq!(verdicts, [true, true], "both ports of 0.0.0.0/0 are denied");
    assert!(
        !stderr(&reached).contains("not permitted"),
        "9092 is not denied: {}",
        stderr(&reached)
    );
    let got = std::fs::read_to_string(logs.join("server-9092.log"))?;
    assert!(got.contains("through-9092"), "the host got: {got:?}");
    // Each denial names its own rule (once the daemon has collected both).
    let rules = || -> Vec<String> {
        d.events("a")
            .iter()
            .filter(|e| e["hook"] == "connect")
            .map(|e| e["rule"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let both = |r: &[String]| {
        [
            "egress:network.deny_egress[0]",
            "egress:network.deny_egress[1]",
        ]
        .iter()
        .all(|want| r.iter().any(|got| got == want))
    };
    within(Duration::from_secs(5), || both(&rules()))
        .unwrap_or_else(|| panic!("a denial per rule: {:?}", rules()));
    Ok(())
}
}

vzhost_tests::net_test! {
fn a_wider_rule_for_one_port_holds_under_a_narrower_rule_for_another() -> anyhow::Result<()> {
    let d = vps_under(
        "egress-nested",
        "    - cidr: 10.0.0.0/8\n      port: 80\n    - cidr: 10.1.0.0/16\n      port: 443\n",
    )?;
    for (ip, port, want) in [
        ("10.1.2.3", 80, true),
        ("10.1.2.3", 443, true),
        ("10.2.0.1", 80, true),
        ("10.1.2.3", 22, false),
        ("10.2.0.1", 443, false),
    ] {
        assert_eq!(denied(&d, ip, port), want, "{ip}:{port}");
    }
    Ok(())
}
}

vzhost_tests::net_test! {
fn a_repeated_rule_is_refused_and_the_last_good_policy_stays() -> anyhow::Result<()> {
    let d = vps_under("egress-repeat", "    - cidr: 0.0.0.0/0\n      port: 9090\n")?;
    d.put_policy("egress.yaml",
        "selector:\n  names: [a]\nnetwork:\n  deny_egress:\n    - cidr: 0.0.0.0/0\n      port: 9091\n    - cidr: 0.0.0.0/0\n      port: 9091\n",
    );
    within(Duration::from_secs(3), || {
        d.ok(&["policy", "list"]).contains("repeats deny_egress[0]")
    })
    .unwrap_or_else(|| panic!("refused: {}", d.ok(&["policy", "list"])));
    assert!(
        denied(&d, GATEWAY, 9090),
        "the previous rules stay in force"
    );
    Ok(())
}
}
