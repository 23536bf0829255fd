//! `cargo xtask test`: setup, fmt, clippy, unit and native integration tests,
//! then the integration tests inside the VM on every kernel of the matrix.
//! Ends with one line: `N passed, M failed`.
use std::{
    io::{BufRead as _, BufReader},
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

use anyhow::Context as _;
use clap::Args;

use crate::{kernels, setup, shell, vm};

/// Tests that need BPF LSM; natively they are filtered out (the host
/// refuses LSM programs) and they run in the VM, where they never skip.
pub const LSM_TEST_FILTER: &str = "lsm::";
/// Tests that need a host tool the VM does not carry (the Prometheus
/// server); what they check of vzhost itself also runs in the VM.
const NATIVE_ONLY_FILTER: &str = "prometheus::";
/// Printed by `vzhost_tests::skip` (shown with --show-output).
const SKIP_MARKER: &str = "vzhost-skip: ";

#[derive(Args)]
pub struct TestArgs {
    /// Kernel series to run the VM tests on (default: all of the matrix).
    #[arg(long)]
    kernel: Vec<String>,
    /// Skip the VM tests.
    #[arg(long)]
    no_vm: bool,
    /// Skip the benchmark smoke run (`cargo xtask bench --quick`).
    #[arg(long)]
    no_bench: bool,
}

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    skipped: u64,
    failures: Vec<String>,
}

impl Tally {
    fn check(&mut self, name: &str, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            self.failures.push(name.to_owned());
        }
    }

    /// Fold in libtest's `test result:` lines; a run that failed without
    /// reporting a failed test counts as one failure.
    fn libtest(&mut self, name: &str, output: &[String], ok: bool) {
        let (mut passed, mut failed) = (0, 0);
        for line in output {
            if let Some((p, f)) = parse_result_line(line) {
                passed += p;
                failed += f;
            }
            if let Some(t) = line
                .strip_prefix("test ")
                .and_then(|l| l.strip_suffix(" ... FAILED"))
            {
                self.failures.push(format!("{name}: {t}"));
            }
        }
        // A test that reported a skip passed in libtest's eyes, but did not run.
        let skipped = output.iter().filter(|l| l.starts_with(SKIP_MARKER)).count() as u64;
        self.skipped += skipped;
        self.passed += passed.saturating_sub(skipped);
        self.failed += failed;
        if !ok && failed == 0 {
            self.failed += 1;
            self.failures.push(format!("{name}: exited with failure"));
        }
    }
}

fn parse_result_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let num = |key: &str| -> Option<u64> {
        rest.split(';')
            .find_map(|part| {
                part.trim()
                    .trim_start_matches("ok. ")
                    .trim_start_matches("FAILED. ")
                    .strip_suffix(key)
            })
            .and_then(|n| n.trim().parse().ok())
    };
    Some((num(" passed")?, num(" failed")?))
}

/// Run `cmd`, echo its output, return (lines, success).
fn capture(cmd: &mut Command) -> anyhow::Result<(Vec<String>, bool)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().context("stdout")?).lines() {
        let line = line?;
        println!("{line}");
        lines.push(line);
    }
    Ok((lines, child.wait()?.success()))
}

fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.args(args).current_dir(shell::workspace_root());
    c
}

pub fn run(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    setup::ensure()?;
    let mut tally = Tally::default();

    section("cargo fmt --check");
    tally.check(
        "cargo fmt --check",
        shell::run(&mut cargo(&["fmt", "--all", "--check"])).is_ok(),
    );

    section("cargo clippy -D warnings");
    let clippy = shell::run(&mut cargo(&[
        "clippy",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]));
    tally.check("cargo clippy", clippy.is_ok());
    let ebpf_clippy = shell::run(&mut cargo(&[
        "+nightly",
        "clippy",
        "--package",
        "ksal-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--release",
        "--target-dir",
        "target/ebpf-clippy",
        "--",
        "-D",
        "warnings",
    ]));
    tally.check("cargo clippy (ksal-ebpf)", ebpf_clippy.is_ok());

    section("unit and native integration tests");
    // The integration tests drive the vzhost binary, which `cargo test`
    // alone does not build for another package's tests.
    let artifacts = vm::Artifacts::build()?;
    let (out, ok) = capture(
        cargo(&[
            "test",
            "--no-fail-fast",
            "--",
            "--show-output",
            "--skip",
            LSM_TEST_FILTER,
        ])
        .env("VZHOST_BIN", &artifacts.vzhost),
    )?;
    tally.libtest("native", &out, ok);

    if !args.no_vm {
        let series: Vec<String> = if args.kernel.is_empty() {
            kernels::SERIES
                .iter()
                .map(|(s, _)| (*s).to_owned())
                .collect()
        } else {
            args.kernel.clone()
        };
        // The kernels boot side by side: each guest is single-threaded
        // TCG, so two of them fit the host's cores.
        section(&format!("VM tests on kernels {}", series.join(", ")));
        let results: Vec<(String, anyhow::Result<vm::Outcome>, Vec<String>)> = std::thread::scope(
            |scope| {
                let runs: Vec<_> = series
                    .iter()
                    .map(|kernel| {
                        let artifacts = &artifacts;
                        scope.spawn(move || {
                            // About 75 tests, each with its own daemon whose
                            // programs take the verifier ~15 s under TCG.
                            let run_args = vm::RunArgs::shell(
                                kernel,
                                3600,
                                format!(
                                    "rc=0; for t in /vm/tests/*; do \"$t\" --test-threads=1 --skip {NATIVE_ONLY_FILTER} || rc=1; done; exit $rc"
                                ),
                            );
                            let mut lines = Vec::new();
                            let result = vm::boot(&run_args, artifacts, &mut |l| {
                                println!("[vm {kernel}] {l}");
                                lines.push(l.to_owned());
                            });
                            (kernel.clone(), result, lines)
                        })
                    })
                    .collect();
                runs.into_iter()
                    .map(|r| r.join().expect("VM thread"))
                    .collect()
            },
        );
        for (kernel, result, lines) in results {
            match result {
                Ok(outcome) => {
                    tally.libtest(&format!("vm {kernel}"), &lines, outcome.exit_code == 0)
                }
                Err(e) => {
                    eprintln!("xtask: VM run on {kernel} failed: {e:#}");
                    tally.check(&format!("vm {kernel}: boot"), false);
                }
            }
        }
    }

    if !args.no_bench && !args.no_vm {
        // The benchmarks keep working: a quick smoke run, no timing asserted.
        section("benchmarks, smoke run (cargo xtask bench --quick)");
        let smoke = crate::bench::run(&crate::bench::BenchArgs { quick: true });
        if let Err(e) = &smoke {
            eprintln!("xtask: bench --quick failed: {e:#}");
        }
        tally.check("cargo xtask bench --quick", smoke.is_ok());
    }

    eprintln!(
        "\nxtask: full test run took {:.0}s",
        started.elapsed().as_secs_f64()
    );
    for f in &tally.failures {
        eprintln!("FAILED: {f}");
    }
    if tally.skipped > 0 {
        eprintln!(
            "skipped (run where the feature exists; see the vzhost-skip lines above): {}",
            tally.skipped
        );
        println!(
            "{} passed, {} failed, {} skipped",
            tally.passed, tally.failed, tally.skipped
        );
    } else {
        println!("{} passed, {} failed", tally.passed, tally.failed);
    }
    Ok(if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn section(name: &str) {
    eprintln!("\n==== {name} ====");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_summaries() {
        let ok = "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        let bad = "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out";
        assert_eq!(parse_result_line(ok), Some((12, 0)));
        assert_eq!(parse_result_line(bad), Some((3, 2)));
        assert_eq!(parse_result_line("running 3 tests"), None);
    }

    #[test]
    fn a_crash_without_summary_is_a_failure() {
        let mut t = Tally::default();
        t.libtest("x", &["running 1 test".into()], false);
        assert_eq!((t.passed, t.failed), (0, 1));
        let mut t = Tally::default();
        t.libtest(
            "x",
            &[
                "test a ... FAILED".into(),
                "test result: FAILED. 1 passed; 1 failed;".into(),
            ],
            false,
        );
        assert_eq!((t.passed, t.failed), (1, 1));
        assert_eq!(t.failures, ["x: a"]);
        let mut t = Tally::default();
        t.libtest(
            "x",
            &[
                "vzhost-skip: t: no xfs".into(),
                "test result: ok. 2 passed; 0 failed;".into(),
            ],
            true,
        );
        assert_eq!((t.passed, t.skipped), (1, 1));
    }
}
