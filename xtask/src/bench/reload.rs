//! Section 5: from a policy file's rename to its rule met in a VPS.
use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    Plan,
    measure::{Report, Samples, target},
};
use crate::host::Host;

pub(super) fn reload(vzhost: &Path, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let host = Host::start(vzhost, "bench", true)?;
    host.quiet(&["create", "a", "--ip", "10.213.0.10"])?;
    host.quiet(&["create", "b", "--ip", "10.213.0.11"])?;
    host.quiet(&["start", "a"])?;
    host.quiet(&["start", "b"])?;
    host.quiet(&["exec", "b", "--", "httpd", "-p", "0.0.0.0:8080", "-h", "/"])?;
    let a_pid = serde_json::from_str::<serde_json::Value>(&host.quiet(&["list", "-o", "json"])?)?
        .as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == "a"))
        .and_then(|v| v["init_pid"].as_u64())
        .context("a's init")?;
    let procs = host.vps_cgroup("a")?.join("cgroup.procs");
    let policy = host.policies().join("lockdown.yaml");
    let text = "selector:\n  names: [a]\nmode: enforce\nallow_degraded: true\nnetwork:\n  deny_egress:\n    - cidr: 10.213.0.11/32\n";
    // A prober in a's cgroup and network namespace: connect as fast as it
    // can and report the moment a denial first arrives (or ends).
    let mut on = Samples::default();
    let mut off = Samples::default();
    for _ in 0..plan.reload_reps {
        for (denied_wanted, samples) in [(true, &mut on), (false, &mut off)] {
            let mut probe = Command::new("nsenter")
                .args(["-t", &a_pid.to_string(), "-n", "sh", "-c"])
                .arg(format!(
                    "echo $$ > {}; while :; do if busybox nc -w 1 10.213.0.11 8080 </dev/null 2>&1 | grep -q 'not permitted'; then d=1; else d=0; fi; if [ $d = {} ]; then exit 0; fi; done",
                    procs.display(),
                    u8::from(denied_wanted)
                ))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            std::thread::sleep(Duration::from_millis(200));
            let t = Instant::now();
            if denied_wanted {
                let tmp = policy.with_extension("tmp");
                fs::write(&tmp, text)?;
                fs::rename(&tmp, &policy)?;
            } else {
                fs::remove_file(&policy)?;
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if probe.try_wait()?.is_some() {
                    samples.push(t.elapsed());
                    break;
                }
                if Instant::now() > deadline {
                    let _ = probe.kill();
                    bail!("the policy change was never enforced");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    let mut s = String::from("## 5. Policy reload\n\n");
    s += "From the rename of a policy file into the policies directory to the first \
          connect from inside the running VPS that meets the new rule (a prober loops \
          `nc` in the VPS's cgroup and network namespace, a few ms per try).\n\n";
    s += "| what | median ms | min ms | max ms | n |\n|---|---|---|---|---|\n";
    s += &on.row("new deny rule enforced");
    s += &off.row("removed rule lifted");
    let _ = writeln!(
        s,
        "\nTarget under 1 s (aim 100 ms): {}\n",
        target(on.median() < 1.0, format!("{:.0} ms", on.median() * 1e3))
    );
    report.add(s);
    Ok(())
}
