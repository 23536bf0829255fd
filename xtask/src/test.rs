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
/// Tests whose outcome depends on each kernel's own hooks: they run on
/// every kernel of the matrix. Every other test runs natively (hybrid
/// cgroups) and in the VM (pure v2) on one kernel of the matrix, dealt
/// out in turn, so the kernels share the VM work side by side.
const EVERY_KERNEL: &[&str] = &["lsm::", "doctor::", "debian::"];
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
    let mut stages = Stages(Vec::new());
    stages.begin("cargo xtask setup");
    setup::ensure()?;
    let mut tally = Tally::default();

    stages.begin("cargo fmt --check");
    tally.check(
        "cargo fmt --check",
        shell::run(&mut cargo(&["fmt", "--all", "--check"])).is_ok(),
    );

    stages.begin("cargo clippy -D warnings");
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

    stages.begin("unit and native integration tests");
    // The integration tests drive the vzhost binary, which `cargo test`
    // alone does not build for another package's tests.
    let artifacts = vm::Artifacts::build()?;
    // The prepared Debian template the distribution tests import: built
    // once and cached, then a disk of the VM too.
    let mut native = cargo(&[
        "test",
        "--no-fail-fast",
        "--",
        "--show-output",
        "--skip",
        LSM_TEST_FILTER,
    ]);
    native.env("VZHOST_BIN", &artifacts.vzhost);
    match crate::images::ensure_debian(&artifacts.vzhost) {
        Ok(image) => {
            native.env("VZHOST_DEBIAN_TEMPLATE", &image.dir);
        }
        Err(e) => {
            eprintln!("xtask: no Debian test image: {e:#}");
            tally.check("Debian test image", false);
        }
    }
    let (out, ok) = capture(&mut native)?;
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
        stages.begin(&format!("VM tests on kernels {}", series.join(", ")));
        let shares = artifacts
            .tests
            .iter()
            .map(|(name, path)| Ok((name.clone(), list_tests(path)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let results: Vec<(String, anyhow::Result<vm::Outcome>, Vec<String>)> =
            std::thread::scope(|scope| {
                let runs: Vec<_> = series
                    .iter()
                    .enumerate()
                    .map(|(index, kernel)| {
                        let artifacts = &artifacts;
                        let script = vm_script(&shares, index, series.len());
                        scope.spawn(move || {
                            // Some 45 tests, each with a daemon of its own:
                            // 15-30 s apiece under TCG.
                            let run_args = vm::RunArgs::shell(kernel, 3600, script);
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
            });
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
        stages.begin("benchmarks, smoke run (cargo xtask bench --quick)");
        let smoke = crate::bench::run(&crate::bench::BenchArgs {
            quick: true,
            only: Vec::new(),
            baseline: None,
        });
        if let Err(e) = &smoke {
            eprintln!("xtask: bench --quick failed: {e:#}");
        }
        tally.check("cargo xtask bench --quick", smoke.is_ok());
    }

    eprintln!(
        "\nxtask: full test run took {:.0}s ({})",
        started.elapsed().as_secs_f64(),
        stages.summary()
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

/// The names of the tests in the test binary at `path`.
fn list_tests(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let out = shell::output(Command::new(path).args(["--list", "--format", "terse"]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect())
}

/// The tests of kernel `index` of `count`: those of [`EVERY_KERNEL`], and
/// every `count`-th of the others, never the native-only ones.
fn vm_share(names: &[String], index: usize, count: usize) -> Vec<&str> {
    let (every, dealt): (Vec<&String>, Vec<&String>) = names
        .iter()
        .filter(|n| !n.starts_with(NATIVE_ONLY_FILTER))
        .partition(|n| EVERY_KERNEL.iter().any(|p| n.starts_with(p)));
    let mine = dealt.into_iter().skip(index).step_by(count.max(1));
    every.into_iter().chain(mine).map(String::as_str).collect()
}

/// The guest's script for kernel `index` of `count`: each test binary
/// with its share, by exact name.
fn vm_script(shares: &[(String, Vec<String>)], index: usize, count: usize) -> String {
    let mut script = String::from("rc=0\n");
    for (binary, names) in shares {
        let mine = vm_share(names, index, count);
        if !mine.is_empty() {
            script.push_str(&format!(
                "/vm/tests/{binary} --test-threads=1 --exact {} || rc=1\n",
                mine.join(" ")
            ));
        }
    }
    script.push_str("exit $rc\n");
    script
}

/// The stages of a run and when each began, for the closing summary.
struct Stages(Vec<(String, Instant)>);

impl Stages {
    fn begin(&mut self, name: &str) {
        eprintln!("\n==== {name} ====");
        self.0.push((name.to_owned(), Instant::now()));
    }

    /// One line: each stage and the seconds it took.
    fn summary(&self) -> String {
        let ends = self
            .0
            .iter()
            .skip(1)
            .map(|(_, t)| *t)
            .chain([Instant::now()]);
        self.0
            .iter()
            .zip(ends)
            .map(|((name, begun), end)| format!("{name}: {:.0}s", (end - *begun).as_secs_f64()))
            .collect::<Vec<_>>()
            .join("; ")
    }
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
    fn the_kernels_share_the_vm_tests() {
        let names: Vec<String> = [
            "lsm::a",
            "lsm::b",
            "doctor::c",
            "net::d",
            "net::e",
            "net::f",
            "prometheus::g",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            vm_share(&names, 0, 2),
            ["lsm::a", "lsm::b", "doctor::c", "net::d", "net::f"]
        );
        assert_eq!(
            vm_share(&names, 1, 2),
            ["lsm::a", "lsm::b", "doctor::c", "net::e"]
        );
        assert_eq!(
            vm_share(&names, 0, 1).len(),
            6,
            "one kernel runs all but native-only"
        );
        let script = vm_script(&[("integration".into(), names)], 1, 2);
        assert!(script.contains(
            "/vm/tests/integration --test-threads=1 --exact lsm::a lsm::b doctor::c net::e || rc=1"
        ));
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
