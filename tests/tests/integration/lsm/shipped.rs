//! The shipped policies hold what they promise under the LSM hooks: every
//! sysctl a shipped policy allows can be written by a VPS under it (a
//! capability rule must not silently make the allowance void).
use vzhost::policy::Policy;
use vzhost_tests::{Daemon, lsm_available};

const SHIPPED: [(&str, &str); 4] = [
    ("default", include_str!("../../../../policies/default.yaml")),
    ("strict", include_str!("../../../../policies/strict.yaml")),
    (
        "web-server",
        include_str!("../../../../policies/web-server.yaml"),
    ),
    (
        "audit-only",
        include_str!("../../../../policies/audit-only.yaml"),
    ),
];

#[test]
fn every_allowed_sysctl_is_writable_under_each_shipped_policy() -> anyhow::Result<()> {
    if !lsm_available("lsm::shipped::every_allowed_sysctl_is_writable_under_each_shipped_policy") {
        return Ok(());
    }
    let d = Daemon::start("shipped-sysctl")?;
    let mut checked = 0;
    for (name, text) in SHIPPED {
        let policy = Policy::parse(&format!("{name}.yaml"), text)?;
        let Some(sysctl) = policy.sysctl else {
            continue;
        };
        d.put_policy(&format!("{name}.yaml"), text);
        let vps = format!("s-{name}");
        d.ok(&["create", &vps, "--policy", name]);
        d.ok(&["start", &vps]);
        for allowed in sysctl.allow_write {
            let path = format!("/proc/sys/{}", String::from(allowed).replace('.', "/"));
            d.sh_ok(&vps, &format!("v=\"$(cat {path})\"; echo \"$v\" > {path}"));
            checked += 1;
        }
        d.ok(&["stop", &vps]);
    }
    assert!(
        checked > 0,
        "no shipped policy lists a sysctl: the test proves nothing"
    );
    Ok(())
}
