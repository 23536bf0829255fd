//! In the VM, where BPF LSM works, `vzhost doctor` reports every feature OK.
use vzhost_tests::lsm_available;

use crate::doctor::{check, doctor_json};

#[test]
fn doctor_reports_everything_ok_in_the_vm() {
    if !lsm_available("doctor_reports_everything_ok_in_the_vm") {
        return;
    }
    let (v, all_ok) = doctor_json();
    assert!(all_ok, "every check must pass in the VM: {v:#}");
    assert!(
        check(&v, "cgroup-layout")["detail"]
            .as_str()
            .unwrap()
            .starts_with("pure v2")
    );
}
