//! `vzhost doctor` tells the truth: its LSM verdict matches a real load, and
//! in the VM every check passes.
use std::process::Command;

use vzhost_tests::in_vm;

pub fn vzhost_bin() -> String {
    std::env::var("VZHOST_BIN").unwrap_or_else(|_| {
        if in_vm() {
            "vzhost".into()
        } else {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/vzhost").into()
        }
    })
}

pub fn doctor_json() -> (serde_json::Value, bool) {
    let out = Command::new(vzhost_bin())
        .args(["doctor", "-o", "json"])
        .output()
        .expect("run vzhost doctor");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor -o json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (v, out.status.success())
}

pub fn check<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v.as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("doctor has no check {name}: {v}"))
}

#[test]
fn doctor_lsm_verdict_matches_a_real_load() {
    let (v, all_ok) = doctor_json();
    let probe = vzhost::ksal::probe_lsm();
    let lsm = check(&v, "bpf-lsm-load");
    assert_eq!(
        lsm["ok"] == true,
        probe.is_ok(),
        "doctor said {lsm}, probe said {probe:?}"
    );
    if let Err(e) = probe {
        let detail = lsm["detail"].as_str().unwrap();
        assert!(
            detail.contains("refused") || detail.contains("cannot run"),
            "{detail} / {e}"
        );
        assert!(
            !all_ok,
            "doctor must exit non-zero when a feature is missing"
        );
    }
    let tc = vzhost::ksal::probe_tc();
    assert_eq!(
        check(&v, "tc-bpf-load")["ok"] == true,
        tc.is_ok(),
        "doctor and the tc probe agree: {tc:?}"
    );
    for name in [
        "tc-bpf-load",
        "btf",
        "cgroup-layout",
        "cgroup-bpf-attach",
        "overlayfs",
        "user-namespaces",
        "bpffs",
    ] {
        assert!(
            check(&v, name)["detail"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
    }
}
