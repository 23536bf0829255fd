//! Section 3: KSAL overhead and density inside the VM.
use anyhow::bail;

use super::{Plan, measure::Report};
use crate::vm;

pub(super) fn in_vm(
    plan: &Plan,
    artifacts: &vm::Artifacts,
    report: &mut Report,
) -> anyhow::Result<()> {
    let args = vm::RunArgs::shell(
        "6.12",
        1800,
        format!(
            "VZHOST_BENCH_OPS={} VZHOST_BENCH_N={} /vm/tests/integration --ignored --test-threads=1 --nocapture bench::",
            plan.vm_ops, plan.vm_density
        ),
    );
    let mut lines = Vec::new();
    let outcome = vm::boot(&args, artifacts, &mut |l| {
        println!("[vm] {l}");
        lines.push(l.to_owned());
    })?;
    if outcome.exit_code != 0 {
        bail!("the VM benchmarks failed (exit {})", outcome.exit_code);
    }
    let mut s = String::from("## 3. KSAL overhead and density in the VM (6.12, TCG)\n\n");
    s += "Inside a VPS with every KSAL program attached and its policy's rules in the \
          maps, against the same loop in a cgroup with no KSAL loaded at all, \
          alternating in the same run. The VM is emulated (TCG): absolute times are \
          slow, the ratio is what counts.\n\n";
    s += "| measure | without KSAL | with KSAL | ratio |\n|---|---|---|---|\n";
    // The VM benchmarks print their rows between markers; libtest puts the
    // test's name on the line the output starts, the console a CR at the end.
    let mut inside = false;
    let mut text = String::new();
    for l in lines.iter().map(|l| l.trim_end()) {
        if l.ends_with("BENCH-MD-BEGIN") {
            inside = true;
        } else if l.starts_with("BENCH-MD-END") {
            inside = false;
        } else if inside && l.starts_with('|') {
            s += l;
            s.push('\n');
        } else if inside {
            text += l;
            text.push('\n');
        }
    }
    s.push('\n');
    s += &text;
    report.add(s);
    Ok(())
}
