//! Policy parsing and checks.
use ksal_common::guard;

use super::*;

#[test]
fn the_shipped_policies_parse() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        Policy::parse(&path.display().to_string(), &text).unwrap_or_else(|e| panic!("{e}"));
    }
    let d = Policy::parse("default.yaml", BUILTIN_DEFAULT).unwrap();
    assert_eq!(d.name, "default");
}

#[test]
fn host_and_family_knobs_are_sections_with_their_own_names() {
    let p = Policy::parse(
        "n.yaml",
        "network:\n  deny_host: true\n  allow_host: [53, ping]\n  socket_families: [unix, inet]\n",
    )
    .unwrap();
    assert!(p.uses(Section::NetworkDenyHost) && p.uses(Section::NetworkSocketFamilies));
    assert_eq!(p.network.allow_host, [HostPort::Port(53), HostPort::Ping]);
    assert_eq!(p.guards(), guard::SOCKET_FAMILIES);
    assert_eq!(
        p.lsm_hooks(),
        vec!["socket_create"],
        "deny_host needs no LSM"
    );
    assert_eq!(
        p.guard_rule_name(guard_rule::DENY_HOST).as_deref(),
        Some("n:network.deny_host")
    );
    assert_eq!(
        p.guard_rule_name(guard_rule::SOCKET_FAMILIES).as_deref(),
        Some("n:network.socket_families")
    );
    let e = Policy::parse("n.yaml", "network:\n  allow_host: [22]\n").unwrap_err();
    assert!(e.reason.contains("deny_host"), "{e}");
    let e = Policy::parse("n.yaml", "network:\n  socket_families: [inet, wifi]\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    let d = Policy::parse("default.yaml", BUILTIN_DEFAULT).unwrap();
    assert!(d.network.deny_host, "on by default");
    assert!(d.network.allow_host.contains(&HostPort::Port(53)));
}

#[test]
fn errors_name_file_line_column_and_field() {
    let text = "mode: enforce\nfiles:\n  deny:\n    - path: etc/shadow\n";
    let e = Policy::parse("p.yaml", text).unwrap_err();
    assert_eq!((e.line, e.file.as_str()), (4, "p.yaml"));
    assert!(e.reason.contains("files.deny[0]"), "{e}");
    assert!(e.reason.contains("not absolute"), "{e}");
    assert!(e.to_string().starts_with("p.yaml:4:"), "{e}");

    let e = Policy::parse("p.yaml", "mode: block\n").unwrap_err();
    assert!(e.reason.contains("mode"), "{e}");
    for bad in ["10.0.0.0/33", "10.0.0.1/8", "ten"] {
        let text = format!("network:\n  deny_egress:\n    - cidr: {bad}\n");
        let e = Policy::parse("p.yaml", &text).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }
    let ok = Policy::parse(
        "p.yaml",
        "network:\n  deny_egress:\n    - cidr: 0.0.0.0/0\n      port: 25\n    - cidr: 192.0.2.1\n",
    )
    .unwrap();
    assert_eq!(ok.network.deny_egress[1].cidr.prefix, 32);
    let e = Policy::parse("p.yaml", "filez: {}\n").unwrap_err();
    assert!(e.reason.contains("unknown field `filez`"), "{e}");
    let e = Policy::parse("p.yaml", "limits:\n  memory: 12QB\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert!(Policy::parse("p.yaml", "- just\n- a list\n").is_err());
    assert!(Policy::parse("p.yaml", "name: Bad_Name\n").is_err());
}

#[test]
fn selection_prefers_explicit_then_priority_then_default() {
    let mut set = PolicySet::default();
    for (file, text) in [
        ("default.yaml", "mode: enforce\n"),
        (
            "web.yaml",
            "selector: {labels: {role: web}}\npriority: 10\n",
        ),
        ("named.yaml", "selector: {names: [db]}\n"),
        ("audit.yaml", "mode: audit\n"),
    ] {
        let p = Policy::parse(file, text).unwrap();
        set.policies.insert(p.name.clone(), p);
    }
    let web = BTreeMap::from([("role".to_owned(), "web".to_owned())]);
    let none = BTreeMap::new();
    let pick = |e, n, l| set.for_vps(e, n, l).map(|p| p.name.as_str());
    assert_eq!(pick(None, "x", &web), Some("web"));
    assert_eq!(pick(None, "db", &none), Some("named"));
    assert_eq!(pick(None, "other", &none), Some("default"));
    assert_eq!(pick(Some("audit"), "x", &web), Some("audit"));
}

#[test]
fn guard_sections_become_bits_hooks_and_names() {
    let p = Policy::parse(
        "g.yaml",
        "mounts:\n  allow_types: [tmpfs, proc]\nkernel:\n  bpf: deny\nnetwork:\n  raw_sockets: deny\ncapabilities:\n  deny: [CAP_NET_ADMIN, sys_admin]\n",
    )
    .unwrap();
    assert_eq!(
        p.guards(),
        guard::MOUNT_TYPES | guard::BPF | guard::RAW_SOCKETS
    );
    assert_eq!(p.caps_denied(), (1 << 12) | (1 << 21));
    assert_eq!(
        p.lsm_hooks(),
        vec![
            "sb_mount",
            "bpf",
            "socket_create",
            "capable",
            "sb_kern_mount"
        ]
    );
    assert_eq!(
        p.guard_rule_name(guard_rule::BPF).as_deref(),
        Some("g:kernel.bpf")
    );
    let e = Policy::parse("g.yaml", "capabilities:\n  deny: [CAP_FLY]\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert!(e.reason.contains("CAP_FLY"), "{e}");
    let e = Policy::parse("g.yaml", "kernel:\n  bpf: maybe\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    let e = Policy::parse("g.yaml", "mounts:\n  allow_types: [\"a b\"]\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
}

#[test]
fn device_and_sysctl_rules_parse_and_round_trip() {
    let p = Policy::parse(
        "d.yaml",
        "devices:\n  allow: [\"c 1:3 rwm\", \"c 136:* rw\"]\nsysctl:\n  allow_write: [net.ipv4.ip_forward]\n",
    )
    .unwrap();
    let d = &p.devices.as_ref().unwrap().allow;
    assert_eq!(String::from(d[0]), "c 1:3 rwm");
    assert_eq!(d[1].key().minor, ksal_common::ANY_MINOR);
    assert_eq!(p.guards(), guard::DEVICES | guard::SYSCTL);
    assert!(p.lsm_hooks().is_empty(), "cgroup hooks, not LSM");
    let k = p.sysctl.as_ref().unwrap().allow_write[0].key();
    assert!(k.starts_with(b"net/ipv4/ip_forward\0"));
    for bad in ["x 1:3 r", "c 1 r", "c 1:3 q", "c *:* rwm", "c 1:3"] {
        let text = format!("devices:\n  allow: [\"{bad}\"]\n");
        let e = Policy::parse("d.yaml", &text).unwrap_err();
        assert_eq!(e.line, 2, "{bad}: {e}");
    }
    assert!(Policy::parse("d.yaml", "sysctl:\n  allow_write: [\"a b\"]\n").is_err());
}

#[test]
fn egress_rules_on_one_network_may_name_several_ports_but_not_one_twice() {
    let two_ports = "network:\n  deny_egress:\n    - cidr: 0.0.0.0/0\n      port: 9090\n    - cidr: 0.0.0.0/0\n      port: 9091\n    - cidr: 0.0.0.0/0\n";
    let p = Policy::parse("e.yaml", two_ports).unwrap();
    let ports: Vec<u16> = p.network.deny_egress.iter().map(|r| r.port).collect();
    assert_eq!(ports, [9090, 9091, 0], "every rule is kept");
    let repeat = "network:\n  deny_egress:\n    - cidr: 10.0.0.0/8\n      port: 80\n    - cidr: 10.1.0.0/16\n      port: 80\n    - cidr: 10.0.0.0/8\n      port: 80\n";
    let e = Policy::parse("e.yaml", repeat).unwrap_err();
    assert!(
        e.reason
            .contains("network: deny_egress[2] (10.0.0.0/8, port 80) repeats deny_egress[0]"),
        "names the field: {e}"
    );
    assert_eq!(e.line, 2, "{e}");
    let any = "network:\n  deny_egress:\n    - cidr: 192.0.2.1\n    - cidr: 192.0.2.1/32\n";
    let e = Policy::parse("e.yaml", any).unwrap_err();
    assert!(
        e.reason
            .contains("(192.0.2.1/32, every port) repeats deny_egress[0]"),
        "{e}"
    );
}

#[test]
fn hooks_a_policy_needs_follow_its_sections() {
    let none = Policy::parse(
        "n.yaml",
        "network:\n  deny_egress:\n    - cidr: 10.0.0.0/8\n",
    )
    .unwrap();
    assert!(
        none.lsm_hooks().is_empty(),
        "egress rules run on cgroup hooks"
    );
    assert_eq!(none.guards(), 0);
    let files = Policy::parse(
        "f.yaml",
        "files:\n  deny:\n    - path: /etc/shadow\nmounts:\n  remount_read_only: true\n  allow_types: [proc]\nkernel:\n  perf_events: deny\n",
    )
    .unwrap();
    assert_eq!(
        files.lsm_hooks(),
        [
            "file_open",
            "sb_mount",
            "perf_event_open",
            "inode_setattr",
            "inode_rename",
            "inode_unlink",
            "inode_link",
            "inode_setxattr",
            "inode_removexattr",
            "sb_kern_mount",
            "move_mount"
        ],
        "every path to a file's content or name; two mount sections need sb_mount once"
    );
    assert_eq!(
        files.guards(),
        guard::MOUNT_TYPES | guard::REMOUNT_READ_ONLY | guard::PERF_EVENTS
    );
    for s in SECTIONS.iter().filter(|s| s.rule != 0) {
        let name = guard_rule_name("p", s.rule).unwrap();
        assert_eq!(name, format!("p:{}", s.path));
    }
    assert_eq!(guard_rule_name("p", guard_rule::FIRST_HOST_RULE), None);
}

#[test]
fn rule_ids_are_stable_and_nonzero() {
    assert_eq!(
        rule_id("default:files.deny[0]"),
        rule_id("default:files.deny[0]")
    );
    assert_ne!(rule_id("a"), rule_id("b"));
    assert!(rule_id("") >= guard_rule::FIRST_HOST_RULE);
}

#[test]
fn a_net_sysctl_allowed_while_net_admin_is_denied_is_refused_where_it_is_written() {
    let text = "capabilities:\n  deny: [CAP_NET_ADMIN]\nsysctl:\n  allow_write: [kernel.hostname, net.ipv4.ip_forward]\n";
    let e = Policy::parse("c.yaml", text).unwrap_err();
    assert_eq!((e.line, e.column), (4, 34), "{e}");
    assert!(e.to_string().contains("sysctl.allow_write[1]"), "{e}");
    assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
    let without_cap = "sysctl:\n  allow_write: [net.ipv4.ip_forward]\n";
    assert!(Policy::parse("c.yaml", without_cap).is_ok());
    let other_sysctl =
        "capabilities:\n  deny: [net_admin]\nsysctl:\n  allow_write: [kernel.hostname]\n";
    assert!(Policy::parse("c.yaml", other_sysctl).is_ok());
}
