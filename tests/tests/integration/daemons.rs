//! Daemons sharing a machine: each names its cgroups with an identity of
//! its own (from its state root), so one never touches another's VPSs.
use anyhow::Context as _;
use vzhost_tests::Daemon;

#[test]
fn two_daemons_in_one_cgroup_keep_their_vpss_apart() -> anyhow::Result<()> {
    let one = Daemon::start("beside")?;
    let two = Daemon::start_beside(&one)?;
    assert_ne!(one.identity(), two.identity());
    for d in [&one, &two] {
        d.ok(&["create", "a"]);
        d.ok(&["start", "a"]);
    }
    assert_ne!(one.vps_cgroup("a"), two.vps_cgroup("a"));
    // Their user-id ranges are apart too: host-wide reservations.
    let base = |d: &Daemon| -> anyhow::Result<u64> {
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.root().join("vps/a/config.json"))?)?;
        spec["idmap"]["base"].as_u64().context("idmap.base")
    };
    let (b1, b2) = (base(&one)?, base(&two)?);
    assert!(
        b1.abs_diff(b2) >= 65_536,
        "overlapping id ranges {b1} and {b2}"
    );
    assert!(one.vps_cgroup("a").is_dir() && two.vps_cgroup("a").is_dir());

    // Destroying one's "a" kills and removes its cgroup only.
    one.ok(&["destroy", "--force", "a"]);
    assert!(!one.vps_cgroup("a").exists(), "one's a is gone");
    assert_eq!(two.status("a").expect("two's a")["status"], "running");
    assert_eq!(two.sh_ok("a", "echo alive"), "alive");
    let procs = std::fs::read_to_string(two.vps_cgroup("a").join("cgroup.procs"))?;
    assert!(!procs.trim().is_empty(), "two's a keeps its processes");
    Ok(())
}
