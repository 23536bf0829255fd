//! `cargo xtask demo`: show vzhost at work on this machine, and the KSAL's
//! LSM enforcement inside the VM when this host refuses LSM programs.
use std::process::{Command, ExitCode};

use crate::{setup, vm};

pub fn run() -> anyhow::Result<ExitCode> {
    setup::ensure()?;
    let artifacts = vm::Artifacts::build()?;
    println!("==== vzhost doctor on this host ====");
    // doctor exits non-zero when a feature is missing; the demo goes on.
    let _ = Command::new(&artifacts.vzhost).arg("doctor").status();

    let lsm_here = Command::new(&artifacts.vzhost)
        .args(["doctor", "-o", "json"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| {
            v.as_array()?
                .iter()
                .find(|c| c["name"] == "bpf-lsm-load")
                .map(|c| c["ok"] == true)
        })
        .unwrap_or(false);
    let where_ = if lsm_here {
        "this host runs BPF LSM programs, but the demo uses the VM so it never touches host policy"
    } else {
        "this host refuses BPF LSM programs, so the LSM demo runs in the VM"
    };
    println!("\n==== KSAL file_open enforcement ({where_}) ====");
    let args = vm::RunArgs {
        kernel: "6.12".into(),
        include: Vec::new(),
        timeout: 600,
        verbose: false,
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "echo '$ vzhost doctor'; vzhost doctor; echo; \
             /vm/tests/integration --test-threads=1 --nocapture lsm::file_open"
                .into(),
        ],
    };
    let outcome = vm::boot(&args, &artifacts, &mut |l| println!("[vm] {l}"))?;
    Ok(ExitCode::from(outcome.exit_code.clamp(0, 255) as u8))
}
