//! `cargo xtask bench [--quick]`: vzhost measured side by side with its
//! peers in one invocation (LXC from Debian's packages, and bare `unshare`
//! as the floor), interleaved where the benchmark allows, so ratios hold
//! on a noisy machine. Writes `bench/REPORT.md` (`--quick`: a smoke run for
//! CI, written under target/ instead).
mod debian;
mod density;
mod lxc;
mod measure;
mod parallel;
mod reload;
mod start;
mod teardown;
mod vm_section;

use std::{
    fs,
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::bail;

use crate::{setup, shell, vm};
use measure::Report;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A short smoke run (CI): few repetitions, small N.
    #[arg(long)]
    pub quick: bool,
    /// Only these sections (repeatable); the report then goes under
    /// target/bench/ and bench/REPORT.md is left as it is.
    #[arg(long, value_enum)]
    pub only: Vec<Section>,
    /// Another vzhost binary (e.g. a build of main) measured beside this
    /// one in the start section, interleaved: before and after in one run.
    #[arg(long)]
    pub baseline: Option<std::path::PathBuf>,
}

/// The report's sections, by what they measure.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    /// 1: start latency (with LXC); 2 and 4: density, scrape and list.
    Native,
    /// 1 alone: start latency.
    Start,
    /// 3: KSAL overhead and density in the VM.
    Vm,
    /// 5: policy reload.
    Reload,
    /// 6: Debian VPSs with systemd and sshd.
    Debian,
    /// 7: parallel starts and `stop --all`.
    Parallel,
}

pub(super) struct Plan {
    pub(super) reps: usize,
    pub(super) density: Vec<usize>,
    pub(super) exec_samples: usize,
    pub(super) reload_reps: usize,
    pub(super) vm_ops: u64,
    pub(super) vm_density: usize,
    /// Debian VPSs with systemd and sshd to start, one after another.
    pub(super) debian: usize,
    /// VPSs started by as many clients at once (and then one by one).
    pub(super) parallel_starts: usize,
    /// Running VPSs `stop --all` stops.
    pub(super) stop_all: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                reps: 3,
                density: vec![10],
                exec_samples: 3,
                reload_reps: 3,
                vm_ops: 2_000,
                vm_density: 5,
                debian: 2,
                parallel_starts: 20,
                stop_all: 20,
            }
        } else {
            Self {
                reps: 15,
                density: vec![100, 1000, 3000],
                exec_samples: 20,
                reload_reps: 10,
                vm_ops: 100_000,
                vm_density: 100,
                debian: 200,
                parallel_starts: 50,
                stop_all: 1000,
            }
        }
    }
}

fn machine_facts() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(|m| m.trim().to_owned())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let lxc = Command::new("lxc-execute")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "- CPU: {cpu}, {cores} cores; {mem}\n- Kernel: {} (hybrid cgroups, BPF LSM refused: the native runs use the cgroup hooks only)\n- LXC {lxc} (Debian)\n",
        kernel.trim()
    )
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    setup::ensure()?;
    if !shell::is_root() {
        bail!("the benchmarks create cgroups and namespaces: run them as root");
    }
    let plan = Plan::new(args.quick);
    let artifacts = vm::Artifacts::build()?;
    let vzhost = if args.quick {
        artifacts.vzhost.clone()
    } else {
        shell::run(
            Command::new("cargo")
                .args([
                    "build",
                    "--release",
                    "--package",
                    "vzhost",
                    "--bin",
                    "vzhost",
                ])
                .current_dir(shell::workspace_root()),
        )?;
        shell::workspace_root().join("target/release/vzhost")
    };
    let started = Instant::now();
    let mut report = Report::default();
    let wanted = |section| args.only.is_empty() || args.only.contains(&section);
    let native = wanted(Section::Native);
    if native || args.only.contains(&Section::Start) {
        let pivots = lxc::lxc_pivots();
        let baseline = args
            .baseline
            .as_deref()
            .map(std::path::absolute)
            .transpose()?;
        let measured = start::start_latency(&vzhost, baseline.as_deref(), &plan, &mut report)
            .and_then(|()| {
                if native {
                    density::density(&vzhost, &plan, &mut report)
                } else {
                    Ok(())
                }
            });
        // LXC leaves a pivot cgroup in every hierarchy it moved through.
        lxc::remove_lxc_pivots(&pivots);
        measured?;
    }
    if wanted(Section::Vm) {
        vm_section::in_vm(&plan, &artifacts, &mut report)?;
    }
    if wanted(Section::Reload) {
        reload::reload(&vzhost, &plan, &mut report)?;
    }
    if wanted(Section::Parallel) {
        parallel::parallel(&vzhost, &plan, &mut report)?;
    }
    if wanted(Section::Debian) {
        let image = crate::images::ensure_debian(&vzhost)?;
        debian::debian(&vzhost, &image.dir, &plan, &mut report)?;
    }
    let date = shell::output(Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC"))?;
    let mut md = format!(
        "# vzhost benchmarks\n\nProduced by `cargo xtask bench{}` on {} in {:.0} s, vzhost {} build.\n\n{}\n",
        if args.quick { " --quick" } else { "" },
        date.trim(),
        started.elapsed().as_secs_f64(),
        if args.quick { "debug" } else { "release" },
        machine_facts()
    );
    // Sections in their numbered order, whatever order they ran in.
    report
        .sections
        .sort_by_key(|s| s.get(3..4).and_then(|n| n.parse::<u8>().ok()));
    for s in &report.sections {
        md += s;
        md.push('\n');
    }
    let path = if args.quick {
        shell::workspace_root().join("target/bench/REPORT-quick.md")
    } else if !args.only.is_empty() {
        shell::workspace_root().join("target/bench/REPORT-sections.md")
    } else {
        shell::workspace_root().join("bench/REPORT.md")
    };
    fs::create_dir_all(path.parent().expect("has a parent"))?;
    fs::write(&path, md)?;
    println!("report: {}", path.display());
    Ok(ExitCode::SUCCESS)
}
