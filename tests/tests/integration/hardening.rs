//! Attacks on the host from inside a VPS that the hardening closed: each
//! test performs the attack and checks that it failed and that nothing on
//! the host changed.
use std::fs;

use vzhost_tests::Daemon;

/// A policy for VPS `a`: a short device list without urandom, and one
/// writable sysctl.
const LOCKDOWN: &str = "selector:\n  names: [a]\nmode: enforce\nallow_degraded: true\ndevices:\n  allow: [\"c 1:3 rwm\", \"c 1:5 rwm\", \"c 5:2 rw\", \"c 136:* rw\"]\nsysctl:\n  allow_write: [net.ipv4.ip_forward]\n";

/// An init whose very first instructions try a device and a sysctl its
/// policy denies, records what happened, then becomes busybox init.
const EAGER_INIT: &str = "#!/bin/sh\n{\n  head -c 4 /dev/urandom >/dev/null 2>&1 && echo device=opened || echo device=denied\n  (echo 32 > /proc/sys/net/ipv4/ip_default_ttl) 2>/dev/null && echo sysctl=written || echo sysctl=denied\n} > /first.log\nexec /bin/busybox init\n";

/// Finding 7: the guards were off while the VPS's init already ran.
#[test]
fn an_init_is_guarded_from_its_first_instruction() -> anyhow::Result<()> {
    let d = Daemon::start("hard-first")?;
    fs::write(d.policies().join("lockdown.yaml"), LOCKDOWN)?;
    d.template_with_init("eager", EAGER_INIT)?;
    d.ok(&["create", "a", "--template", "eager"]);
    d.ok(&["start", "a"]);
    let mut log = String::new();
    for _ in 0..100 {
        log = d
            .sh("a", "cat /first.log 2>/dev/null")
            .stdout
            .escape_ascii()
            .to_string();
        if log.contains("sysctl=") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        log.contains("device=denied"),
        "the init opened a denied device: {log}"
    );
    assert!(
        log.contains("sysctl=denied"),
        "the init wrote a denied sysctl: {log}"
    );
    assert_eq!(d.sh_ok("a", "cat /proc/sys/net/ipv4/ip_default_ttl"), "64");
    Ok(())
}
